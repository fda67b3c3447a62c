"""StreamDataset's bad input, refused in the caller's process with one located line
before any request or socket (real torch; no server is needed)."""

from __future__ import annotations

import pytest

from tests.support.ci import require_module
from tests.support.suite import pipeline

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _torch():
    require_module("torch", "'lclstream-suite[torch]' (torch==2.13.0, the CPU wheel)")


def test_join_refuses_a_bad_source():
    from lclstream_api.client import ClientError
    from lclstream_api.client.torch import StreamDataset

    with pytest.raises(ClientError, match=r"^StreamDataset.join: source.urls: Field required$"):
        StreamDataset.join({"transfer": "abc"})
    with pytest.raises(ClientError, match=r"source.urls: List should have at least 1 item"):
        StreamDataset.join({"urls": []})
    with pytest.raises(ClientError, match=r"source.protocol: "):
        StreamDataset.join({"urls": ["tcp://127.0.0.1:1"], "protocol": "carrier-pigeon"})


def test_join_by_urls_checks_the_config_and_keeps_one_url_whole():
    from lclstream_api.client import ClientError
    from lclstream_api.client.torch import StreamDataset

    ds = StreamDataset.join("tcp://127.0.0.1:5", config=pipeline(8))
    assert ds.source.urls == ["tcp://127.0.0.1:5"] and ds.source.transfer is None
    assert ds.source.config["data_serializer"]["type"] == "hdf5" and ds.transfer is None
    bad = pipeline(8)
    del bad["data_serializer"]
    with pytest.raises(ClientError, match="data_serializer"):
        StreamDataset.join(["tcp://127.0.0.1:5"], config=bad)


def test_epoch_mode_refuses_a_rank_outside_the_world(tmp_path):
    from lclstream_api.client import ClientError
    from lclstream_api.client.torch import StreamDataset

    with pytest.raises(ClientError, match=r"rank 2 is not in 0\.\.1 \(world_size 2\)"):
        StreamDataset(pipeline(8), cache=tmp_path, rank=2, world_size=2)


def test_a_live_dataset_with_a_bad_config_starts_nothing():
    from lclstream_api.client import ClientError
    from lclstream_api.client.torch import StreamDataset

    bad = pipeline(8)
    bad["processing_pipeline"]["batch_size"] = 0
    with pytest.raises(ClientError, match="batch_size"):
        StreamDataset(bad, server="https://127.0.0.1:1")  # refused before any request
