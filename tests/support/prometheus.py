"""A real Prometheus server (Debian `prometheus`, deploy/prometheus/install.sh) scraping
suite services over mTLS with a certified identity, as docs/operators.md configures it."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from .ci import require_executable
from .ports import free_port
from .procs import ProcessSupervisor
from .waiting import wait_until

INSTALL = "bash deploy/prometheus/install.sh (Debian prometheus; CI runs it)"


def scrape_job(name: str, target: str, identity: Path, server_ca: Path) -> dict:
    """One scrape job: HTTPS with the scraper's certified identity (id.crt, id.key) and
    the service's CA (its CA.crt), TLS 1.3 as every suite server requires."""
    return {
        "job_name": name,
        "scheme": "https",
        "tls_config": {
            "ca_file": str(server_ca),
            "cert_file": str(identity / "id.crt"),
            "key_file": str(identity / "id.key"),
            "min_version": "TLS13",
        },
        "static_configs": [{"targets": [target]}],
    }


class Prometheus:
    """`prometheus` on a free port with these scrape jobs, every second."""

    def __init__(self, spawn: ProcessSupervisor, root: Path, jobs: list[dict]) -> None:
        exe = require_executable("prometheus", INSTALL)
        root.mkdir(parents=True, exist_ok=True)
        cfg = root / "prometheus.yml"
        doc = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}}
        cfg.write_text(yaml.safe_dump({**doc, "scrape_configs": jobs}))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv = [exe, f"--config.file={cfg}", f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
        self.proc = spawn(argv, name="prometheus")
        self.proc.wait_port(port, timeout=60)

    def query(self, expr: str) -> list[dict]:
        resp = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        resp.raise_for_status()
        return resp.json()["data"]["result"]

    def targets(self) -> list[dict]:
        resp = httpx.get(f"{self.url}/api/v1/targets", timeout=10)
        resp.raise_for_status()
        return resp.json()["data"]["activeTargets"]

    def wait_up(self, job: str, timeout: float = 60) -> None:
        """Until `job`'s target was scraped successfully (its last error in the message)."""

        def up() -> bool:
            found = [t for t in self.targets() if t["labels"].get("job") == job]
            return bool(found) and found[0]["health"] == "up"

        try:
            wait_until(up, timeout, f"Prometheus to scrape {job}", interval=0.2)
        except AssertionError:
            raise AssertionError(f"{job} not scraped: {self.targets()}") from None

    def value(self, expr: str) -> float:
        """The single value `expr` has now."""
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])
