"""certified.webhooks: signatures, the allow-list, delivery with retries, the receiver side."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from certified import Certified
from certified.errors import CertifiedError
from certified.webhooks import (
    HEADER,
    Destinations,
    Poster,
    RetryPolicy,
    WebhookSender,
    sign,
    signed_body,
    verify,
)
from tests.support.receiver import BlackHole, Receiver

pytestmark = pytest.mark.timeout(60)

BODY = b'{"jobid":"1","jobndx":1,"state":"queued","info":"local:9"}'
FAST = RetryPolicy(timeout=2, first_delay=0.05, max_delay=0.2, give_up_after=0.5)


def test_signature_is_hmac_sha256_hex_of_the_raw_body():
    expected = hmac.new(b"k", BODY, hashlib.sha256).hexdigest()
    assert sign("k", BODY) == "sha256=" + expected
    assert verify("k", BODY, "sha256=" + expected)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha1=00",
        "sha256=",
        "sha256=" + "0" * 64,
        sign("other", BODY),
        sign("k", BODY + b" "),
        sign("k", BODY).upper(),
        "sha256=é",
    ],
)
def test_wrong_signatures_fail(header):
    assert not verify("k", BODY, header)


def test_backoff_doubles_caps_and_stays_within_the_bound():
    policy = RetryPolicy(first_delay=0.5, max_delay=4, give_up_after=20)
    assert policy.delays() == [0.5, 1, 2, 4, 4, 4, 4]
    assert RetryPolicy(give_up_after=0).delays() == []
    assert policy.worst_case() == 8 * policy.timeout + 19.5


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0, -1])
def test_policy_refuses_non_finite_and_non_positive_times(bad):
    with pytest.raises(ValueError):
        RetryPolicy(timeout=bad)


@pytest.mark.parametrize(
    ("allowed", "url", "ok"),
    [
        (["lclstream"], "https://lclstream/cb", True),
        (["lclstream"], "https://lclstream:443/cb", False),
        (["lclstream"], "http://lclstream/cb", False),
        (["lclstream"], "https://other/cb", False),
        (["https://h.example:8443/hooks/"], "https://h.example:8443/hooks/a", True),
        (["https://h.example:8443/hooks"], "https://h.example:8443/hooks", True),
        (["https://h.example:8443/hooks"], "https://h.example:8443/hooksX", False),
        (["https://h.example:8443/hooks"], "https://h.example:8443/other", False),
        (["https://h.example"], "https://h.example.evil.org/", False),
        (["https://h.example"], "https://h.example@evil.org/", False),
        (["https://h.example"], "http://h.example/", False),
        ([], "https://lclstream/cb", False),
        (None, "https://anything.example/", True),
    ],
)
def test_destinations(allowed, url, ok):
    assert Destinations(allowed).allows(url) is ok


def test_destination_entries_are_checked():
    with pytest.raises(CertifiedError, match="neither a service nickname"):
        Destinations(["ftp://x/", "h.example"])
    with pytest.raises(CertifiedError, match="not allowed"):
        Destinations(["lclstream"]).check("https://evil/")


def mtls_receiver(pki, **kw) -> Receiver:
    """A receiver speaking mTLS as cn:server, which cn:client trusts as `receiver`."""
    rx = Receiver(Certified(pki.server), **kw)
    pki.add_service(pki.client, "receiver", rx.base)
    return rx


def test_retries_until_the_receiver_answers_over_mtls(pki):
    rx = mtls_receiver(pki, fail_first=2, secret="k")
    sender = WebhookSender(FAST, pki.client, allowed=[rx.base])
    try:
        outcome = sender.send(rx.url, BODY, "k")
        assert (outcome.delivered, outcome.attempts) == (True, 3)
        assert [r["status"] for r in rx.requests] == [503, 503, 200]
        assert rx.requests[-1]["identity"] == "cn:client"
        assert rx.requests[-1]["headers"][HEADER] == sign("k", BODY)
    finally:
        sender.close()
        rx.close()


def test_a_refusal_is_final_and_a_budget_ends(pki):
    rx = mtls_receiver(pki, secret="k")
    sender = WebhookSender(FAST, pki.client)
    try:
        outcome = sender.send(rx.url, BODY, "wrong")
        assert (outcome.delivered, outcome.attempts, outcome.reason) == (
            False,
            1,
            "refused: HTTP 401",
        )
        rx.fail_first = 100
        outcome = sender.send(rx.url, BODY, "k")
        assert not outcome.delivered and outcome.reason == "HTTP 503"
        assert outcome.attempts == len(FAST.delays()) + 1
    finally:
        sender.close()
        rx.close()


def test_an_unlisted_destination_is_never_contacted(pki):
    rx = mtls_receiver(pki, secret="k")
    sender = WebhookSender(FAST, pki.client, allowed=["https://127.0.0.1:1/"])
    try:
        outcome = sender.send(rx.url, BODY, "k")
        assert (outcome.delivered, outcome.attempts) == (False, 0)
        assert "not allowed" in outcome.reason
        assert rx.requests == []  # no connection, so no mTLS identity presented
    finally:
        sender.close()
        rx.close()


def test_a_black_hole_costs_a_bounded_time(pki):
    hole = BlackHole()
    policy = RetryPolicy(timeout=0.5, first_delay=0.1, max_delay=0.1, give_up_after=0.2)
    sender = WebhookSender(policy, pki.client)
    try:
        start = time.monotonic()
        outcome = sender.send(hole.url, BODY, "k")
        took = time.monotonic() - start
        assert not outcome.delivered and "Timeout" in outcome.reason
        print(f"black hole: gave up after {took:.2f} s (worst case {policy.worst_case():.2f} s)")
    finally:
        sender.close()
        hole.close()


def test_poster_keeps_order_and_counts_drops():
    rx = Receiver(secret="k")
    poster = Poster(WebhookSender(FAST), rx.url, "k", max_pending=1000)
    try:
        for i in range(20):
            poster.post(b'{"n": %d}' % i)
        poster.close()
        assert [b["n"] for b in rx.bodies()] == list(range(20))
        assert (poster.delivered, poster.failed, poster.dropped) == (20, 0, 0)
    finally:
        rx.close()


def test_signed_body_dependency():
    app = FastAPI()

    @app.post("/static")
    async def static(body: bytes = Depends(signed_body("k"))) -> dict:
        return {"n": len(body)}

    async def per_request(request) -> str:
        return "key-" + request.query_params.get("t", "")

    @app.post("/lookup")
    async def lookup(body: bytes = Depends(signed_body(per_request))) -> dict:
        return {"n": len(body)}

    with TestClient(app) as client:
        assert client.post("/static", content=BODY, headers={HEADER: sign("k", BODY)}).json() == {
            "n": len(BODY)
        }
        assert client.post("/static", content=BODY).status_code == 401
        assert (
            client.post("/static", content=BODY, headers={HEADER: sign("j", BODY)}).status_code
            == 401
        )
        good = {HEADER: sign("key-7", BODY)}
        assert client.post("/lookup?t=7", content=BODY, headers=good).status_code == 200
        assert client.post("/lookup?t=8", content=BODY, headers=good).status_code == 401
