"""Errors in OpenAI's JSON shape, and the handlers that make every failure one of them.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "file", "code": null}}

Bodies never carry a stack trace: an unexpected exception is logged here, and the client gets
``500 internal server error``.  FastAPI's validation errors become 400s naming the field.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error", 500: "server_error",
          503: "server_error", 504: "server_error"}


class APIError(HTTPException):
    """An error answered to the client.  A subclass of HTTPException, so FastAPI re-raises it
    untouched even from inside body parsing (the upload-size guard raises it there)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.message, self.param, self.code = message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path")]
    return ".".join(parts) or "body"


async def _api_error(request: Request, err: HTTPException) -> JSONResponse:
    if isinstance(err, APIError):
        return error_response(err.status_code, err.message, err.param, err.code, err.headers)
    message = {404: f"no route {request.url.path}", 405: f"method {request.method} not allowed here"}.get(
        err.status_code, str(err.detail))
    return error_response(err.status_code, message, headers=getattr(err, "headers", None))


async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
    field = _field(tuple(first.get("loc", ())))
    msg = first.get("msg", "invalid value")
    if first.get("type") == "json_invalid":
        return error_response(400, "request body is not valid JSON", "body", "invalid_json")
    return error_response(400, f"{field}: {msg}", field, "invalid_value")


async def _unexpected(request: Request, err: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal server error", code="internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
