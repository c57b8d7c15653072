"""A small HTTP file server on 127.0.0.1 for the fetch tests (stdlib ``http.server``, one
thread per request), with the behaviours a real download meets:

- ``files``: path -> bytes, served with ``Content-Length``, honouring ``Range: bytes=N-``
  (answer 206 with ``Content-Range``), 416 past the end;
- ``cut``: path -> byte count: the first request of that path announces the whole length but
  sends only that many bytes and closes the connection (an interrupted transfer);
- ``html``: paths answered with an HTML page and status 200 (a login or confirmation page);
- ``headers``: path -> extra response headers (e.g. ``X-Linked-Etag``);
- every other path: 404.
``requests`` records (path, Range header) of each request. Bound to the loopback address
only, port chosen by the OS, stopped by ``close()``.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.html: set[str] = set()
        self.headers: dict[str, dict[str, str]] = {}
        self.requests: list[tuple[str, str | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet tests
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?")[0]
                owner.requests.append((path, self.headers.get("Range")))
                if path in owner.html:
                    body = b"<!DOCTYPE html><html><body>Please sign in</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if path not in owner.files:
                    self.send_error(404, "Not Found")
                    return
                data = owner.files[path]
                start = 0
                wanted = self.headers.get("Range")
                if wanted and wanted.startswith("bytes="):
                    start = int(wanted[len("bytes="):].split("-")[0])
                    if start >= len(data):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                for key, value in owner.headers.get(path, {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if path in owner.cut:
                    self.wfile.write(data[start:start + owner.cut.pop(path)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
