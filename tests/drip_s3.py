"""An S3-compatible server that stalls: for the tests of reads that must end.

moto answers every request at once, so it cannot show what a stalled store does to a
worker. This server speaks just enough S3 over real HTTP for a GET of one object: a
HEAD answers at once (a size and an ETag); a GET of a *dripping* key sends its headers
and then one byte of the body every ``drip_s`` seconds, each byte well inside botocore's
20 s read timeout, so no socket read ever times out and, without a deadline of its own,
the read would take hours. Keys containing ``fast`` answer at once with a real photo.
A drip ends (the connection is closed) after ``drip_for_s`` seconds, so even a process
whose reads have no bound (the code before its fix) gets its answer eventually.

It runs in a thread of the test process (it must not be killed with a worker), on a
free port of 127.0.0.1; every request is logged as ``(method, path)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ETAG = '"0123456789abcdef0123456789abcdef"'
#: What a dripping object claims to hold (the bytes never all arrive).
DRIP_SIZE = 5000


@dataclass
class DripServer:
    """A running server: its endpoint and the requests it has seen."""

    url: str
    requests: list[tuple[str, str]] = field(default_factory=list)

    def gets(self, fragment: str) -> int:
        """How many GETs named a key containing ``fragment``."""
        return sum(1 for method, path in self.requests if method == "GET" and fragment in path)


@contextmanager
def running_drip_server(fast_body: bytes, *, drip_s: float = 0.5, drip_for_s: float = 20.0) -> Iterator[DripServer]:
    """Start the server; stop it (and end every drip) when the block ends."""
    stopping = threading.Event()
    state = DripServer("")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _headers(self, size: int) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("ETag", ETAG)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Last-Modified", "Tue, 01 Dec 2026 00:00:00 GMT")
            self.end_headers()

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            state.requests.append(("HEAD", self.path))
            self._headers(len(fast_body) if "fast" in self.path else DRIP_SIZE)

        def do_GET(self) -> None:  # noqa: N802
            state.requests.append(("GET", self.path))
            if "fast" in self.path:
                self._headers(len(fast_body))
                self.wfile.write(fast_body)
                return
            self._headers(DRIP_SIZE)
            until = time.monotonic() + drip_for_s
            try:
                for _ in range(DRIP_SIZE - 1):
                    if stopping.is_set() or time.monotonic() > until:
                        break
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    stopping.wait(drip_s)
            except OSError:
                pass  # the reader gave up: what a bounded read does
            self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="drip-s3", daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
