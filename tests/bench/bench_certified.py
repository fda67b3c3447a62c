"""certified benchmark: what the handshake plumbing (alerts, revocation in the handshake) costs.

Run from the repository root:  .venv/bin/python tests/bench/bench_certified.py [--n N]

Serves `certified.whoami:app` three ways and, for each, times N new mTLS connections
(handshake + one GET /openapi.json each, sequential) and N GETs on one kept-alive
connection (the stock server has no peer identity, so the bench asks a page that needs none):
- baseline: stock uvicorn doing TLS itself (asyncio's SSLProtocol, no alerts);
- `certified serve` (AlertingSSLProtocol: refused clients get their alert);
- `certified serve --crl FILE` (plus the OpenSSL verify callback asking the CRL).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

import httpx  # noqa: E402

from certified import Certified  # noqa: E402
from certified.keys import load_certificate, load_private_key, write_pem  # noqa: E402
from certified.pki import build_crl, pem  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.procs import ProcessSupervisor  # noqa: E402
from tests.support.servers import start_certified_server  # noqa: E402

STOCK = """
import sys, uvicorn
from certified import Certified
from certified.asgi import CertifiedMiddleware
from certified.whoami import app
ctx = Certified(sys.argv[1]).ssl_context(server=True)
uvicorn.run(CertifiedMiddleware(app), host="127.0.0.1", port=int(sys.argv[2]), log_level="error",
            ssl_context_factory=lambda _c, _d: ctx, access_log=False)
"""


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def measure(client_dir: Path, url: str, n: int) -> tuple[list[float], float]:
    """(per-connection seconds for n new connections, seconds for n kept-alive GETs)."""
    ctx = Certified(client_dir).ssl_context(
        False, pinned=(client_dir / "server-ca.pem").read_text()
    )
    per_conn = []
    for _ in range(n):
        t0 = time.perf_counter()
        with httpx.Client(verify=ctx) as c:
            assert c.get(url + "/openapi.json").status_code == 200
        per_conn.append(time.perf_counter() - t0)
    with httpx.Client(verify=ctx) as c:
        c.get(url + "/openapi.json")
        t0 = time.perf_counter()
        for _ in range(n):
            c.get(url + "/openapi.json")
        kept = time.perf_counter() - t0
    return per_conn, kept


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pki = make_pki(root / "pki")
        (pki.client / "server-ca.pem").write_text((pki.server / "CA.crt").read_text())
        crl = root / "crl.pem"
        ca_key, ca_cert = (
            load_private_key(pki.other / "CA.key"),
            load_certificate(pki.other / "CA.crt"),
        )
        write_pem(
            crl,
            pem(
                build_crl(
                    ca_key, ca_cert, [(i, ca_cert.not_valid_before_utc) for i in range(1, 1000)]
                )
            ),
        )
        sup = ProcessSupervisor(root)
        try:
            port = free_port()
            stock = sup([sys.executable, "-c", STOCK, str(pki.server), str(port)], name="stock")
            stock.wait_port(port)
            servers = [("baseline: uvicorn's own TLS", f"https://127.0.0.1:{port}")]
            _p, url = start_certified_server(sup, pki.server, name="alerting")
            servers.append(("certified serve", url))
            _p, url = start_certified_server(sup, pki.server, extra=["--crl", str(crl)], name="crl")
            servers.append(("certified serve --crl (999 revoked)", url))
            print(
                f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cpus,"
                f" python {platform.python_version()}"
            )
            head = f"{'new conn p50':>12} {'p99':>8} {'conn/s':>8} {'kept-alive GET/s':>17}"
            print(f"{'server':38} {head}")
            for name, url in servers:
                per_conn, kept = measure(pki.client, url, args.n)
                print(
                    f"{name:38} {statistics.median(per_conn) * 1e3:9.2f} ms"
                    f" {pct(per_conn, 0.99) * 1e3:5.2f} ms"
                    f" {args.n / sum(per_conn):8.1f} {args.n / kept:17.1f}"
                )
        finally:
            sup.stop_all()


if __name__ == "__main__":
    main()
