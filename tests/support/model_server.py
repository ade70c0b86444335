"""A real HTTP server on 127.0.0.1 that serves model files from a folder, with the faults a download can meet.

    with ModelServer(folder) as server:       # MMFS_MODEL_MIRROR=server.url
        server.fault = "drop"                 # the next responses stop half-way ("html": an HTML page instead)

It honours `Range: bytes=N-` (as Google Drive and most mirrors do; `ranges = False` ignores it), so a download can resume; `delay`
slows every chunk down, and `pause_after` holds a transfer after that many bytes until `go` is set, so that
a test can act while a transfer runs. Every request is recorded.
"""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

CHUNK = 4096
HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>Too many users</body></html>"
)


class ModelServer:
    """The folder's files over HTTP. `fault`: None, "drop" (close after half the body; `drops` times, -1: always)
    or "html" (a 200 HTML page for every file). `requests` lists (path, Range header or "") in order."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.fault: str | None = None
        self.ranges = True  # False: a plain server that ignores Range and always sends the whole file
        self.drops = -1
        self.delay = 0.0
        self.pause_after: int | None = None  # bytes of a response, then wait for `go`
        self.go = threading.Event()
        self.requests: list[tuple[str, str]] = []
        self.bytes_sent = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server spelling
                server._serve(self)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def gets(self, name: str) -> list[str]:
        """The Range header of every request for `name` ("" for a whole-file request)."""
        return [rng for path, rng in self.requests if path == "/" + name]

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        rng = handler.headers.get("Range", "")
        self.requests.append((handler.path, rng))
        path = self.folder / handler.path.lstrip("/")
        if self.fault == "html":
            self._send(handler, 200, HTML_PAGE, {"Content-Type": "text/html; charset=utf-8"})
            return
        if not path.is_file():
            self._send(handler, 404, b"not found", {"Content-Type": "text/plain"})
            return
        size = path.stat().st_size
        start = int(rng.removeprefix("bytes=").split("-")[0]) if rng.startswith("bytes=") and self.ranges else 0
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        status = 200
        if start:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(size - start)}.items():
            handler.send_header(key, value)
        handler.end_headers()
        left = size - start
        if self.fault == "drop" and self.drops != 0:
            left //= 2
            self.drops -= 1 if self.drops > 0 else 0
            handler.close_connection = True
        chunk = CHUNK if self.delay else 1 << 20  # full-size files stream in 1 MB pieces
        sent = 0
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                while left > 0:
                    piece = fh.read(min(chunk, left))
                    handler.wfile.write(piece)
                    handler.wfile.flush()
                    left -= len(piece)
                    sent += len(piece)
                    self.bytes_sent += len(piece)
                    if self.pause_after is not None and sent >= self.pause_after:
                        self.go.wait(timeout=120)
                    if self.delay:
                        time.sleep(self.delay)
        except (BrokenPipeError, ConnectionResetError):
            pass

    @staticmethod
    def _send(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes, headers: dict) -> None:
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)
