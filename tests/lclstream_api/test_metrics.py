"""lclstream-api's GET /metrics: the counting rules (pure), then the real services over
mTLS (psik-api with the local backend, nngstream buffers, `mpirun -n 2 lclstreamer`, the
`lclstream` CLI) and a scraper with its own certified identity."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from certified import Certified
from certified.webhooks import HEADER, sign
from lclstream_api.machine import step
from lclstream_api.metrics import progress
from lclstream_api.models import JobRef, MetricsSeen, Transfer, TransferOptions
from lclstream_api.store import Store
from nngstream.models import Metrics
from tests.support.metrics import scrape
from tests.support.ports import free_port
from tests.support.prometheus import Prometheus, scrape_job
from tests.support.servers import start_lclstream_api, start_psik_api
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)


def report(t: float, **counts: int) -> Metrics:
    base = dict(producers=1, consumers=1, recvd=0, sent=0, dropped=0, buffered=0,
                buffered_bytes=0, bytes_in=0, bytes_out=0, rate_in=0.0, rate_out=0.0)  # fmt: skip
    return Metrics(time=t, state="streaming", **{**base, **counts})


# -- counting rules (pure) ---------------------------------------------------------------
def test_a_report_counts_only_what_it_adds():
    first = report(1.0, recvd=4, bytes_in=400)
    assert progress(None, first)["bytes_in"] == 400
    later = report(2.0, recvd=6, bytes_in=650, sent=5, bytes_out=500)
    assert progress(first, later) == {
        "bytes_in": 250, "bytes_out": 500, "recvd": 2, "sent": 5, "dropped": 0,
    }  # fmt: skip
    assert progress(later, later) is None  # a duplicate
    assert progress(later, first) is None  # a late one
    # a newer report with smaller counts: the buffer started over, all of it is new
    again = report(3.0, recvd=1, bytes_in=100, sent=6, bytes_out=600)
    assert progress(later, again) == {
        "bytes_in": 100, "bytes_out": 100, "recvd": 1, "sent": 1, "dropped": 0,
    }  # fmt: skip


def test_a_late_report_does_not_replace_the_newest():
    t = Transfer(id="t1", owner="cn:client", created=0.0, updated=0.0,
                 options=TransferOptions(), roles=["producer", "buffer-0"])  # fmt: skip
    new = report(5.0, recvd=9)
    t, _ = step(t, MetricsSeen(role="buffer-0", metrics=new, time=5.0))
    t, _ = step(t, MetricsSeen(role="buffer-0", metrics=report(4.0, recvd=3), time=5.1))
    assert t.metrics["buffer-0"] == new


def test_two_apps_in_one_process_keep_their_own_series(tmp_path):
    """Each app has its own registry: a second one neither collides (the global registry
    would refuse the same names twice) nor sees the first one's counts."""
    from lclstream_api.metrics import ApiMetrics

    stores = [Store(tmp_path / f"{i}.db") for i in range(2)]
    try:
        a, b = (ApiMetrics(st) for st in stores)
        a.buffer_report(None, report(1.0, bytes_out=7))
        a.callback_error("bad_signature")
        value = a.registry.get_sample_value
        assert value("lclstream_buffer_sent_bytes_total") == 7
        assert b.registry.get_sample_value("lclstream_buffer_sent_bytes_total") == 0
        labels = {"reason": "bad_signature"}
        assert value("lclstream_callback_errors_total", labels) == 1
        assert b.registry.get_sample_value("lclstream_callback_errors_total", labels) == 0
    finally:
        for st in stores:
            st.close()


# -- the real services -------------------------------------------------------------------
def pipeline(events: int, rate_hz: float) -> dict:
    return {
        "source_identifier": "synthetic:metrics",
        "event_source": {"type": "synthetic", "number_of_events": events, "seed": 5,
                         "rate_limit_hz": rate_hz, "detectors": {"det": {"shape": [2, 32, 32]}}},
        "data_sources": {"frames": {"type": "detector", "source": "det"},
                         "index": {"type": "event_index"}},
        "processing_pipeline": {"type": "batch", "batch_size": 4},
        "data_serializer": {"type": "hdf5", "fields": {"frames": "/data/frames",
                                                       "index": "/data/index"}},
    }  # fmt: skip


@dataclass
class Services:
    pki: object
    spawn: object
    root: Path
    port: int
    psik_url: str
    scraper: Path

    def start_api(self):
        self.api, _, _ = start_lclstream_api(
            self.spawn, self.pki.server, self.root, self.port,
            {"metrics_readers": ["cn:scraper"], "operators": ["cn:operator"]},
        )  # fmt: skip

    def client(self, who: Path) -> httpx.Client:
        return Certified(who).client("https://lclstream", timeout=60)

    def store(self) -> Store:
        return Store(self.root / "lclstream-api" / "transfers.db")


@pytest.fixture
def services(pki, spawn, tmp_path) -> Services:
    """psik-api and lclstream-api as cn:server; cn:scraper may read metrics, cn:operator
    is an operator, cn:client an ordinary user."""
    scraper = pki.new_identity("scraper")
    operator = pki.new_identity("operator")
    port = free_port()
    for who in (pki.server, pki.client, scraper, operator):
        pki.add_service(who, "lclstream", f"https://127.0.0.1:{port}")
    psik = {"kill_grace": 2.0, "callback": {"allowed": ["lclstream"]}}
    readers = {"metrics_readers": ["cn:scraper"]}
    _, psik_url = start_psik_api(spawn, pki.server, tmp_path, psik=psik, settings=readers)
    pki.add_service(pki.server, "psik", psik_url)
    s = Services(pki, spawn, tmp_path, port, psik_url, scraper)
    s.start_api()
    return s


def post_signed(client: httpx.Client, path: str, secret: str, body: bytes) -> httpx.Response:
    return client.post(path, content=body, headers={HEADER: sign(secret, body)})


def test_counters_move_during_a_transfer_and_survive_a_restart(services, tmp_path):
    with services.client(services.scraper) as scraper:
        before = scrape(scraper)
    assert before['lclstream_transfers{state="streaming"}'] == 0
    assert before["lclstream_buffer_received_bytes_total"] == 0

    cfg = tmp_path / "stream.yaml"
    cfg.write_text(yaml.safe_dump(pipeline(96, rate_hz=12)))
    dest = tmp_path / "received"
    cmd = ["lclstream", "get", str(cfg), "--producers", "2", "--out", str(dest),
           "--config", str(services.pki.client)]  # fmt: skip
    get = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with services.client(services.scraper) as scraper:

            def moving() -> dict | None:
                assert get.poll() is None, get.communicate()
                m = scrape(scraper)
                live = m['lclstream_transfers{state="streaming"}'] == 1
                return m if live and m["lclstream_buffer_sent_bytes_total"] > 0 else None

            during = wait_until(moving, 120, "bytes counted while the transfer streams")
        assert during["lclstream_buffer_capacity_bytes"] == TransferOptions().max_buffer_bytes
        assert during["lclstream_consumers_connected"] == 1
        out, err = get.communicate(timeout=180)
    finally:
        if get.poll() is None:
            get.kill()
            get.communicate()
    assert get.returncode == 0, err
    summary = json.loads(out)
    assert summary["state"] == "completed" and summary["events"] == 96, summary
    batches = sorted(dest.rglob("*.msg"))
    nbytes = sum(p.stat().st_size for p in batches)

    with services.client(services.scraper) as scraper:

        def settled() -> dict | None:  # the buffer's last report may follow its job's end
            m = scrape(scraper)
            done = m["lclstream_buffer_sent_messages_total"] == len(batches)
            return m if done and m["lclstream_events_streamed_total"] == 96 else None

        after = wait_until(settled, 60, f"{len(batches)} messages and 96 events counted")
    assert after["lclstream_buffer_received_messages_total"] == len(batches)
    assert after["lclstream_buffer_sent_bytes_total"] == nbytes
    assert after["lclstream_buffer_received_bytes_total"] == nbytes
    assert after["lclstream_buffer_dropped_messages_total"] == 0
    assert after['lclstream_transfers{state="completed"}'] == 1
    assert after['lclstream_transfers{state="streaming"}'] == 0
    assert after["lclstream_buffered_bytes"] == 0
    assert after["lclstream_buffer_capacity_bytes"] == 0  # no live transfer left

    # a restarted service starts its counters at zero and does not count again what the
    # stored last report already counted; a newer report adds only its difference
    tid = summary["transfer"]
    store = services.store()
    try:
        t = store.get(tid)
    finally:
        store.close()
    last = t.metrics["buffer-0"]
    services.api.stop()
    services.start_api()
    path = f"/callbacks/{tid}/buffer-0"
    newer = last.model_copy(update={"time": last.time + 1, "bytes_out": last.bytes_out + 100})
    with services.client(services.pki.server) as server, services.client(services.scraper) as s:
        assert post_signed(server, path, t.secret, last.model_dump_json().encode()).is_success
        assert scrape(s)["lclstream_buffer_sent_bytes_total"] == 0
        assert post_signed(server, path, t.secret, newer.model_dump_json().encode()).is_success
        assert post_signed(server, path, t.secret, last.model_dump_json().encode()).is_success
        m = scrape(s)
    assert m["lclstream_buffer_sent_bytes_total"] == 100
    assert m["lclstream_buffer_received_bytes_total"] == 0
    assert m['lclstream_transfers{state="completed"}'] == 1  # gauges come from the database


def test_readers_errors_and_reconciler_failures(services):
    with services.client(services.pki.client) as user:
        resp = user.get("/metrics")
    assert resp.status_code == 403, resp.text
    assert "cn:client may not read metrics" in resp.json()["detail"]
    with services.client(services.pki.root / "operator") as operator:
        assert operator.get("/metrics").status_code == 200  # operators may read them too

    # a live transfer whose job psik-api does not know: every reconciler pass fails to
    # get its state (the transfer fails once its provisioning timeout runs out)
    now = time.time()
    t = Transfer(
        id="feedbeeffeedbeef", owner="cn:client", created=now, updated=now,
        options=TransferOptions(provisioning_timeout=30), roles=["producer", "buffer-0"],
        jobs={"producer": JobRef(jobid="999999", state="queued")},
    )  # fmt: skip
    store = services.store()
    try:
        store.save(t, secret="0123")
    finally:
        store.close()
    body = report(now, sent=1).model_dump_json().encode()
    with services.client(services.pki.server) as server:
        assert post_signed(server, "/callbacks/nosuch/buffer-0", "0123", body).status_code == 404
        assert post_signed(server, f"/callbacks/{t.id}/buffer-9", "0123", body).status_code == 404
        assert post_signed(server, f"/callbacks/{t.id}/buffer-0", "bad", body).status_code == 403
        resp = server.post(f"/callbacks/{t.id}/buffer-0", content=body)  # unsigned
        assert resp.status_code == 403
        assert post_signed(server, f"/callbacks/{t.id}/buffer-0", "0123", b"[1]").status_code == 422
    with services.client(services.scraper) as scraper:
        m = wait_until(
            lambda: (
                (m := scrape(scraper))['lclstream_reconciler_errors_total{kind="job_state"}'] >= 2
                and m
            ),
            60,
            "two reconciler passes failing to get the job's state",
        )
    assert m['lclstream_callback_errors_total{reason="unknown_transfer"}'] == 2
    assert m['lclstream_callback_errors_total{reason="bad_signature"}'] == 2
    assert m['lclstream_callback_errors_total{reason="invalid_body"}'] == 1
    assert m['lclstream_reconciler_errors_total{kind="pass"}'] == 0
    assert m["lclstream_buffer_sent_messages_total"] == 0  # refused reports count nothing
    assert m['lclstream_transfers{state="provisioning"}'] == 1


def test_prometheus_scrapes_both_services_with_a_certified_identity(services, spawn, tmp_path):
    """Debian's Prometheus, configured as docs/operators.md says (tls_config from the
    scraper's certified directory and the services' CA): both targets up, series
    queryable; an identity not allowed leaves its target down with the 403. promtool's
    linter accepts both pages."""
    ca = services.pki.server / "CA.crt"
    lcl, psik = f"127.0.0.1:{services.port}", services.psik_url.removeprefix("https://")
    prom = Prometheus(spawn, tmp_path / "prometheus", [
        scrape_job("lclstream-api", lcl, services.scraper, ca),
        scrape_job("psik-api", psik, services.scraper, ca),
        scrape_job("not-a-reader", lcl, services.pki.client, ca),
    ])  # fmt: skip
    prom.wait_up("lclstream-api")
    prom.wait_up("psik-api")
    assert prom.value('lclstream_transfers{state="completed"}') == 0
    assert prom.value('lclstream_callback_errors_total{reason="bad_signature"}') == 0
    assert {r["metric"]["state"] for r in prom.query("psik_jobs")} == {
        "new", "queued", "active", "completed", "failed", "canceled"
    }  # fmt: skip
    assert prom.value("psik_callback_failures_total") == 0

    def refused() -> str | None:
        t = [t for t in prom.targets() if t["labels"]["job"] == "not-a-reader"]
        return t and t[0]["health"] == "down" and t[0]["lastError"]

    assert "403" in wait_until(refused, 60, "the non-reader's scrape to be refused")

    promtool = shutil.which("promtool")
    assert promtool is not None  # installed with prometheus
    with services.client(services.scraper) as scraper:
        page = scraper.get("/metrics").text
    with Certified(services.scraper).client(services.psik_url, timeout=60) as psik_client:
        psik_page = psik_client.get("/metrics").text
    for text in (page, psik_page):
        lint = subprocess.run([promtool, "check", "metrics"], input=text, text=True,
                              capture_output=True, timeout=60)  # fmt: skip
        assert lint.returncode == 0, lint.stdout + lint.stderr
