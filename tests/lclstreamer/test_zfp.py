"""HDF5 with zfp: the four modes of hdf5plugin's Zfp, compression_level mapping, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from lclstreamer import models as m
from lclstreamer.config import parse_config
from lclstreamer.errors import ConfigError, DataError
from lclstreamer.pipeline import BatchPipeline
from lclstreamer.protocols import Event, StreamContext
from lclstreamer.serializers.hdf5 import HDF5Serializer

from .helpers import read_message, run_cli, synthetic_config, write_config

pytestmark = pytest.mark.timeout(60)
ZFP = 32013


def _frames(n: int, dtype=np.float32) -> list[Event]:
    rng = np.random.default_rng(5)
    return [Event(i, {"a": (rng.poisson(20.0, (32, 32)) * 0.37).astype(dtype)}) for i in range(n)]


def _serialize(events: list[Event], **cfg) -> list[dict]:
    conf = m.HDF5Serializer(type="hdf5", compression="zfp", fields={"a": "/a"}, **cfg)
    ctx = StreamContext(0, 1, "zfp")
    batches = BatchPipeline(m.BatchPipeline(type="batch", batch_size=4), ctx)(iter(events))
    return [read_message(bytes(msg)) for msg in HDF5Serializer(conf, ctx, None)(batches)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_reversible_is_lossless_for_every_zfp_dtype(dtype):
    events = _frames(8, dtype)
    msgs = _serialize(events)
    got = np.concatenate([msg["/a"] for msg in msgs])
    np.testing.assert_array_equal(got, np.stack([e.data["a"] for e in events]))
    assert msgs[0]["filters"]["/a"] == ((1, 32, 32), [ZFP])


@pytest.mark.parametrize(
    ("mode", "level", "bound"),
    [
        ("accuracy", 4, 2.0**-4),  # absolute error <= 2**-level
        ("accuracy", -2, 4.0),
        ("precision", 20, None),
        ("rate", 12, None),
    ],
)
def test_lossy_modes_keep_their_promise(mode, level, bound):
    events = _frames(8)
    truth = np.stack([e.data["a"] for e in events])
    got = np.concatenate([msg["/a"] for msg in _serialize(events, zfp_mode=mode,
                                                          compression_level=level)])  # fmt: skip
    err = np.abs(got - truth).max()
    if bound is not None:
        assert 0 < err <= bound
    else:
        assert err < 0.05 * np.abs(truth).max()  # close, and not bit-exact by construction


def test_rate_sets_the_compressed_size():
    """Fixed rate: compression_level bits per value (8 vs 16: one vs two bytes a value)."""
    import io

    import h5py

    sizes = {}
    ctx = StreamContext(0, 1, "zfp")
    for rate in (8, 16):
        conf = m.HDF5Serializer(type="hdf5", compression="zfp", fields={"a": "/a"},
                                zfp_mode="rate", compression_level=rate)  # fmt: skip
        batches = BatchPipeline(m.BatchPipeline(type="batch", batch_size=4), ctx)(iter(_frames(4)))
        msg = next(HDF5Serializer(conf, ctx, None)(batches))
        with h5py.File(io.BytesIO(bytes(msg)), "r") as f:
            sizes[rate] = f["a"].id.get_storage_size()
    values = 4 * 32 * 32
    assert sizes[8] == pytest.approx(values * 1, rel=0.05)
    assert sizes[16] == pytest.approx(values * 2, rel=0.05)


def test_unsupported_dtype_is_a_clear_error():
    with pytest.raises(
        DataError,
        match=r"data_serializer\.fields\.a: zfp compresses only "
        r"float32, float64, int32, int64 arrays, not uint16",
    ):
        _serialize(_frames(4, np.uint16))


def test_uint16_detector_with_zfp_fails_the_run_with_one_line(tmp_path):
    cfg = synthetic_config(tmp_path / "out", n=4, compression="zfp")
    cfg["event_source"]["detectors"]["det"]["dtype"] = "uint16"
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg)), "--no-progress"])
    assert res.code != 0
    assert "zfp compresses only float32, float64, int32, int64 arrays, not uint16" in res.stderr
    assert "Traceback" not in res.stderr


MINIMAL = """\
event_source: {type: synthetic, number_of_events: 4}
data_sources:
  f: {type: detector, source: epix10k2M}
data_serializer:
  type: hdf5
  fields: {f: /f}
  compression: zfp
data_handlers: [{type: null}]
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("compression_level: 3", "compression 'zfp reversible' takes no compression_level"),
        ("zfp_mode: rate", "zfp rate needs a compression_level"),
        ("{zfp_mode: precision, compression_level: 65}", "outside 1..64 for zfp precision"),
        ("{zfp_mode: accuracy, compression_level: 99}", "outside -64..64 for zfp accuracy"),
        ("zfp_mode: lossy", "zfp_mode"),
    ],
)
def test_bad_zfp_settings_are_located(extra, message):
    if extra.startswith("{"):  # two keys: one per line
        extra = "\n  ".join(kv.strip() for kv in extra.strip("{}").split(","))
    text = MINIMAL.replace("compression: zfp", f"compression: zfp\n  {extra}")
    with pytest.raises(ConfigError) as err:
        parse_config(text, "cfg.yaml")
    assert "data_serializer" in str(err.value) and message in str(err.value), str(err.value)


def test_zfp_mode_needs_zfp():
    text = MINIMAL.replace("compression: zfp", "compression: gzip\n  zfp_mode: rate")
    with pytest.raises(ConfigError, match="zfp_mode is for compression zfp, not 'gzip'"):
        parse_config(text, "cfg.yaml")
