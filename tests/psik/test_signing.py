"""HMAC signatures of callback bodies and the receiver-side check."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from psik.callbacks import backoff_delays, read_callback
from psik.models import Callback, CallbackPolicy, JobState
from psik.signing import sign, verify

BODY = Callback(jobid="1", jobndx=1, state=JobState.queued, info="local:9").model_dump_json()


def test_signature_is_hmac_sha256_hex_of_the_raw_body():
    expected = hmac.new(b"k", BODY.encode(), hashlib.sha256).hexdigest()
    assert sign("k", BODY.encode()) == "sha256=" + expected
    assert verify("k", BODY.encode(), "sha256=" + expected)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha1=00",
        "sha256=",
        "sha256=" + "0" * 64,
        sign("other", BODY.encode()),
        sign("k", BODY.encode() + b" "),
        sign("k", BODY.encode()).upper(),
        "sha256=é",
    ],
)
def test_wrong_signatures_fail(header):
    assert not verify("k", BODY.encode(), header)


def test_read_callback():
    assert read_callback("k", BODY.encode(), sign("k", BODY.encode())).state is JobState.queued
    with pytest.raises(PermissionError):
        read_callback("k", BODY.encode(), sign("j", BODY.encode()))
    with pytest.raises(ValueError):
        read_callback("k", b"{}", sign("k", b"{}"))


def test_backoff_doubles_caps_and_stays_within_the_bound():
    policy = CallbackPolicy(first_delay=0.5, max_delay=4, give_up_after=20)
    delays = backoff_delays(policy)
    assert delays == [0.5, 1, 2, 4, 4, 4, 4]
    assert sum(delays) <= 20
    assert backoff_delays(CallbackPolicy(give_up_after=0)) == []
