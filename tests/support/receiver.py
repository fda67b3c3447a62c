"""Webhook receivers for tests: a real HTTP(S) server in a thread, and a black hole.

`Receiver` records every POST (headers, raw body, the client's certified identity) and
can refuse the first N with 503; `BlackHole` accepts connections and never answers.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509

from certified import Certified
from certified.trust import client_identity_of
from certified.webhooks import HEADER, verify


class _TLSServer(ThreadingHTTPServer):
    """Handshakes in the request's thread, so one silent client cannot stall accept()."""

    daemon_threads = True

    def __init__(self, ctx: ssl.SSLContext | None, handler) -> None:
        self.ctx = ctx
        super().__init__(("127.0.0.1", 0), handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.ctx is not None:
            sock = self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr


class Receiver:
    """Records POSTs; with `certified` it speaks mTLS as that (server) identity and records
    each client's identity (`cn:...`); with `secret` it answers 401 to a body that key
    does not sign; the first `fail_first` POSTs get 503."""

    def __init__(
        self, certified: Certified | None = None, fail_first: int = 0, secret: str | None = None
    ) -> None:
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.secret = secret
        self.lock = threading.Lock()
        cas = certified.trusted_clients() if certified is not None else []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.settimeout(10)
                    self.request.do_handshake()
                super().setup()

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                identity = None
                if isinstance(self.connection, ssl.SSLSocket):
                    der = self.connection.getpeercert(binary_form=True)
                    if der:
                        identity = client_identity_of(x509.load_der_x509_certificate(der), cas)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer.lock:
                    status = 200
                    if outer.fail_first > 0:
                        outer.fail_first -= 1
                        status = 503
                    elif outer.secret is not None and not verify(
                        outer.secret, body, headers.get(HEADER)
                    ):
                        status = 401
                    outer.requests.append(
                        {
                            "headers": headers,
                            "body": body,
                            "identity": identity,
                            "refused": status != 200,
                            "status": status,
                            "time": time.time(),
                        }
                    )
                self.send_response(status)
                # a JSON body: upstream psik's client reads the content-type of the answer
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        ctx = certified.ssl_context(server=True) if certified is not None else None
        self.server = _TLSServer(ctx, Handler)
        self.port = self.server.server_address[1]
        self.base = f"{'https' if ctx else 'http'}://127.0.0.1:{self.port}"
        self.url = f"{self.base}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if not r["refused"]]

    def bodies(self) -> list[dict]:
        """The accepted JSON bodies, in arrival order."""
        return [json.loads(r["body"]) for r in self.accepted()]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BlackHole:
    """A TCP listener that accepts connections and never reads or answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}/callback"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        for conn in self.held:
            conn.close()
