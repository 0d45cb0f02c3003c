"""A scriptable HTTP(S) server for tests: each GET or POST answers whatever a Python callable returns.

Stands in for a metrics endpoint whose series a test changes at will (a counter that resets, a
series that vanishes, a model name with quotes) and for a misbehaving Prometheus (a slow answer,
HTML instead of JSON). Only on 127.0.0.1; use it as a context manager so its thread is joined.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

# path -> (status, content type, body). A POST's form body is passed as the path's query string,
# so one responder serves `GET /api/v1/query?query=…` and the same query POSTed as a form.
Responder = Callable[[str], tuple[int, str, bytes]]


def answer(handler: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes) -> None:
    """Send one whole answer; a client that went away meanwhile (it timed out) is not an error."""
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass


class TextServer:
    """Serves `responder(path)` for every GET, POST and PUT; `delay_s` makes each answer that late."""

    def __init__(self, responder: Responder, delay_s: float = 0.0, tls: ssl.SSLContext | None = None) -> None:
        self.responder = responder
        self.delay_s = delay_s
        self.requests = 0
        self.last_headers: dict[str, str] = {}
        self.last_request_line = ""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(self.path)

            def do_POST(self) -> None:  # noqa: N802
                form = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                self._answer(f"{self.path}?{form}" if form else self.path)

            def do_PUT(self) -> None:  # noqa: N802 - a write to a stand-in API server: answered like a GET
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer(self.path)

            def _answer(self, path: str) -> None:
                server.requests += 1
                if server.delay_s:
                    time.sleep(server.delay_s)
                server.last_headers = dict(self.headers)
                server.last_request_line = self.requestline
                status, content_type, body = server.responder(path)
                answer(self, status, content_type, body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="textserver", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    def __enter__(self) -> TextServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
