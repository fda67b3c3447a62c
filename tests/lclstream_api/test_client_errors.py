"""Client errors keep their type and fields across processes (DataLoader workers pickle
the exceptions they raise back to the training loop)."""

from __future__ import annotations

import pickle

import pytest

from lclstream_api.client.errors import StreamBroken, TransferFailed

pytestmark = pytest.mark.timeout(10)


def test_errors_survive_pickling_with_their_fields():
    broken = pickle.loads(pickle.dumps(StreamBroken("stream broken", {"batches": 3})))
    assert type(broken) is StreamBroken
    assert broken.received == {"batches": 3}
    assert str(broken) == "stream broken (received: {'batches': 3})"
    failed = pickle.loads(pickle.dumps(TransferFailed("transfer failed: bad path", {"id": "t"})))
    assert type(failed) is TransferFailed
    assert (str(failed), failed.detail) == ("transfer failed: bad path", {"id": "t"})
