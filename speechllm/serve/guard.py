"""``Guard``: the checks every ``/v1`` request passes before its body is read.

In order: the bearer API key (constant-time compare), the declared ``Content-Length`` against
the body limit, and the number of requests in flight (beyond ``max_concurrent``: 429 at once,
so a flood costs the server no reading, decoding or queueing).  While the body streams in, the
bytes actually received are counted too (a chunked upload has no ``Content-Length``), and the
413 is raised from inside body parsing as an :class:`APIError`.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from speechllm.serve.errors import APIError, error_response

PUBLIC_PREFIX = "/v1/"


class Guard:
    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int, max_concurrent: int):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes, self.max_concurrent = max_body_bytes, max_concurrent
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PUBLIC_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # names are lower-case bytes in ASGI
        refusal = self._refusal(headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, self._counting(receive), send)
        finally:
            self.in_flight -= 1

    def _refusal(self, headers: dict[bytes, bytes]):
        if self.api_key is not None and not self._authorized(headers.get(b"authorization", b"")):
            return error_response(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                  code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return error_response(400, "bad Content-Length header", code="invalid_request")
            if int(length) > self.max_body_bytes:
                return error_response(413, f"request body too large: {int(length)} bytes > "
                                           f"{self.max_body_bytes}", code="request_too_large")
        if self.in_flight >= self.max_concurrent:
            return error_response(429, f"too many requests in flight ({self.max_concurrent}); retry shortly",
                                  code="too_many_requests", headers={"Retry-After": "1"})
        return None

    def _authorized(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        # compare_digest takes time independent of where the strings differ
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.api_key)

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise APIError(413, f"request body too large: over {self.max_body_bytes} bytes",
                                   code="request_too_large")
            return message

        return counted
