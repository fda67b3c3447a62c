"""Metrics posted as signed callbacks (HMAC-SHA256 over the raw body), plain and mTLS."""

from __future__ import annotations

import pytest

from certified import Certified
from certified.webhooks import HEADER, verify
from nngstream.models import Metrics
from tests.support.receiver import Receiver

from .helpers import consumer, final_metrics, producer, start_buffer, wait_exit

SECRET = "correct horse battery staple"


def run_stream(spawn, free_port, tmp_path, *extra: str):
    in_port, out_port = free_port(), free_port()
    key = tmp_path / "cb.key"
    key.write_text(SECRET + "\n")  # the key never appears on the command line
    buf = start_buffer(
        spawn, in_port, out_port, "--metrics-interval", "0.2", "--cb-secret-file", str(key),
        *extra,
    )  # fmt: skip
    assert all(SECRET not in part for part in buf.args)
    cons = consumer(spawn, f"tcp://127.0.0.1:{out_port}", tmp_path / "c.json", name="c")
    prod = producer(spawn, f"tcp://127.0.0.1:{in_port}", 0, 200, "--sizes", "10000",
                    "--delay", "0.002")  # fmt: skip
    assert wait_exit(prod, 30) == 0
    assert wait_exit(buf, 30) == 0, buf.stderr()
    assert wait_exit(cons, 30) == 0
    return buf


def check_bodies(rx: Receiver, buf) -> list[dict]:
    accepted = rx.accepted()
    assert accepted, "no callback arrived"
    for r in accepted:
        assert verify(SECRET, r["body"], r["headers"].get(HEADER)), r["headers"]
        assert r["headers"]["content-type"] == "application/json"
        Metrics.model_validate_json(r["body"])  # the documented record, nothing else
    bodies = rx.bodies()
    states = [b["state"] for b in bodies]
    # every state change is posted, in order, ending with the final record
    firsts = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
    assert firsts == ["waiting", "streaming", "draining", "done"], states
    assert bodies[-1] == final_metrics(buf)
    assert bodies[-1]["sent"] == 200
    return bodies


@pytest.mark.timeout(60)
def test_signed_callbacks_over_http(spawn, free_port, tmp_path):
    rx = Receiver(fail_first=1)  # the first POST is refused with 503: it must be retried
    try:
        buf = run_stream(
            spawn, free_port, tmp_path, "--callback", rx.url, "--callback-allow", rx.base
        )
        check_bodies(rx, buf)
        first = rx.requests[0]
        assert first["refused"] and rx.requests[1]["body"] == first["body"]
    finally:
        rx.close()


@pytest.mark.timeout(60)
def test_signed_callbacks_over_mtls(spawn, free_port, tmp_path, pki):
    rx = Receiver(Certified(pki.server))
    try:
        pki.add_service(pki.client, "lclstream-api", rx.base)
        # a trusted-service nickname: certified resolves it and pins the server
        buf = run_stream(
            spawn, free_port, tmp_path, "--callback", "https://lclstream-api/callback",
            "--certified-config", str(pki.client),
        )  # fmt: skip
        check_bodies(rx, buf)
        assert all(r["identity"] == "cn:client" for r in rx.accepted())
    finally:
        rx.close()


@pytest.mark.timeout(60)
def test_refused_tls_does_not_stop_the_stream(spawn, free_port, tmp_path, pki):
    """Without a client identity the mTLS server refuses every callback: the stream
    still completes, and the failures are logged, not raised."""
    rx = Receiver(Certified(pki.server))
    try:
        buf = run_stream(
            spawn, free_port, tmp_path, "--callback", rx.url, "--callback-allow", rx.base
        )
        assert final_metrics(buf)["state"] == "done"
        assert rx.accepted() == []
        assert "callback to" in buf.stderr() and "failed" in buf.stderr()
    finally:
        rx.close()
