"""An OpenAI-compatible speech server (FastAPI + uvicorn) for every model of :mod:`speechllm.api`,
with dynamic batching, overload control, upload limits and a web demo at ``/``.

    import speechllm.serve
    speechllm.serve.serve("whisper-tiny.en", port=8000)         # blocks; `speechllm serve` calls this

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.audio.transcriptions.create(model="whisper-tiny.en", file=open("clip.wav", "rb"))

``BackgroundServer`` runs one in a thread on a free localhost port (tests, benchmarks).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Any

from speechllm.serve.app import create_app
from speechllm.serve.config import ServeConfig

log = logging.getLogger(__name__)
__all__ = ["BackgroundServer", "ServeConfig", "create_app", "serve"]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(model: str | Any = ServeConfig.model, *, host: str = ServeConfig.host, port: int = ServeConfig.port,
          api_key: str | None = None, **settings: Any) -> None:
    """Load ``model`` and serve it until interrupted; ``settings`` are :class:`ServeConfig` fields."""
    import uvicorn

    config = ServeConfig(model=model if isinstance(model, str) else "model", host=host, port=port,
                         api_key=api_key, **settings)
    if not _is_loopback(host) and not api_key:
        log.warning("serving on %s without an API key: anyone who can reach it can use it", host)
    app = create_app(config, None if isinstance(model, str) else model)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` — uvicorn in a daemon thread on 127.0.0.1:<free port>."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))  # port 0: the kernel picks a free one, no race
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
