"""A callback receiver for tests: an HTTP(S) server in a thread that records requests."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Records every POST (headers, raw body, client identity); can refuse the first N."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, fail_first: int = 0) -> None:
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                peer = None
                if isinstance(self.connection, ssl.SSLSocket):
                    cert = self.connection.getpeercert()
                    peer = dict(x[0] for x in cert["subject"]) if cert else None
                with outer.lock:
                    refuse = outer.fail_first > 0
                    outer.fail_first -= 1 if refuse else 0
                    outer.requests.append(
                        {
                            "headers": dict(self.headers),
                            "body": body,
                            "peer": peer,
                            "refused": refuse,
                        }
                    )
                self.send_response(503 if refuse else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if not r["refused"]]

    def bodies(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.accepted()]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
