"""A local HTTP callback receiver for tests: checks signatures, can be told to fail."""

from __future__ import annotations

import json
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from photosentry.worker.delivery import CallbackSigner

KEY = b"0123456789abcdef-test-key"


class Receiver:
    """A local callback receiver that checks signatures and can be told to fail."""

    def __init__(self, signer: CallbackSigner) -> None:
        self.signer = signer
        self.fail_next: list[int] = []
        self.received: list[dict] = []
        self.rejected = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.fail_next:
                    self.send_response(receiver.fail_next.pop(0))
                elif not receiver.signer.verify(body, dict(self.headers)):
                    receiver.rejected += 1
                    self.send_response(401)
                else:
                    receiver.received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/verdicts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HangingReceiver:
    """A receiver that reads a request and then holds the connection, answering only once
    released: the slow receiver of the fail-open review. Counts connections it holds."""

    def __init__(self, signer: CallbackSigner) -> None:
        self.signer = signer
        self.release = threading.Event()
        self.held = 0
        self.received: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.held += 1
                try:
                    # Held until released, or until the client gives up and closes its end.
                    while not receiver.release.wait(0.05):
                        if self._client_closed():
                            return
                finally:
                    with receiver._lock:
                        receiver.held -= 1
                if receiver.signer.verify(body, dict(self.headers)):
                    receiver.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def _client_closed(self) -> bool:
                readable, _, _ = select.select([self.connection], [], [], 0)
                try:
                    return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hang"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
