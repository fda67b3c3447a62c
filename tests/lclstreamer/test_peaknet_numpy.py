"""The peaknet pipeline (padding, channel axis, normalization exact against numpy; too
large frames refused) and the numpy serializer (read back with numpy alone)."""

from __future__ import annotations

import lz4.frame
import numpy as np
import pytest

from lclstreamer.errors import DataError
from lclstreamer.models import BatchPipeline as BatchConfig
from lclstreamer.models import NumpySerializer as NumpyConfig
from lclstreamer.models import PeaknetPipeline as PeaknetConfig
from lclstreamer.pipeline import BatchPipeline
from lclstreamer.pipelines.peaknet import PeaknetPipeline
from lclstreamer.protocols import Event, RunInfo, StreamContext
from lclstreamer.serializers.numpy import NumpySerializer, decode

from .helpers import run_cli, write_config
from .science import example, source_of

pytestmark = [pytest.mark.timeout(120)]


def _cfg(**kw) -> PeaknetConfig:
    base = {"type": "peaknet", "field": "img", "target_height": 8, "target_width": 10}
    return PeaknetConfig(**{**base, **kw})


def _run(cfg: PeaknetConfig, images: list[np.ndarray]) -> list:
    events = iter(Event(i, {"img": im}) for i, im in enumerate(images))
    return [
        (b.array("img").copy(), b.array("img_original_shape").copy())
        for b in PeaknetPipeline(cfg, None)(events)
    ]


def test_center_and_bottom_right_padding_exact():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 100, (5, 7)).astype(np.uint16)
    [(out, shapes)] = _run(_cfg(pad_value=-1.0), [img])
    want = np.full((8, 10), -1.0, np.float32)
    want[1:6, 1:8] = img
    np.testing.assert_array_equal(out[0], want)
    assert shapes.tolist() == [[5, 7]]
    [(out, _)] = _run(_cfg(pad_style="bottom_right"), [img])
    want = np.zeros((8, 10), np.float32)
    want[:5, :7] = img
    np.testing.assert_array_equal(out[0], want)


def test_channel_axis_and_normalization_exact():
    rng = np.random.default_rng(2)
    images = [rng.normal(50, 7, (6, 9)) for _ in range(3)]
    cfg = _cfg(add_channel_dim=True, num_channels=3, normalize=True, eps=1e-3, batch_size=3)
    [(out, shapes)] = _run(cfg, images)
    assert out.shape == (3, 3, 8, 10) and out.dtype == np.float32
    for k, im in enumerate(images):
        norm = ((im - im.mean()) / (im.std() + 1e-3)).astype(np.float32)
        want = np.zeros((8, 10), np.float32)
        want[1:7, 0:9] = norm
        for c in range(3):
            np.testing.assert_allclose(out[k, c], want, rtol=0, atol=1e-6)
    assert shapes.tolist() == [[6, 9]] * 3


def test_frames_of_different_sizes_share_one_padded_shape():
    images = [np.ones((4, 4)), np.ones((8, 10)), np.ones((3, 9))]
    [(out, shapes)] = _run(_cfg(batch_size=3), images)
    assert out.shape == (3, 8, 10)
    assert shapes.tolist() == [[4, 4], [8, 10], [3, 9]]
    assert out.sum(axis=(1, 2)).tolist() == [16, 80, 27]


def test_too_large_frame_is_an_error_unless_crop():
    with pytest.raises(DataError, match=r"event 0: 'img' is 9 x 10, larger than the target 8 x 10"):
        _run(_cfg(), [np.ones((9, 10))])
    img = np.arange(12 * 14, dtype=np.float32).reshape(12, 14)
    [(out, shapes)] = _run(_cfg(crop=True), [img])
    np.testing.assert_array_equal(out[0], img[2:10, 2:12])
    assert shapes.tolist() == [[12, 14]]


def test_nan_and_bad_shapes_are_errors():
    img = np.ones((4, 4))
    img[1, 1] = np.nan
    with pytest.raises(DataError, match="event 0: 'img' has 1 NaN or inf values"):
        _run(_cfg(), [img])
    with pytest.raises(DataError, match=r"must be an image \(H, W\) or \(C, H, W\)"):
        _run(_cfg(), [np.ones(5)])
    with pytest.raises(DataError, match="already has a channel axis"):
        _run(_cfg(add_channel_dim=True), [np.ones((2, 4, 4))])


def _numpy_messages(cfg: NumpyConfig, values: list[dict]) -> list[dict]:
    events = iter(Event(10 + 2 * i, v) for i, v in enumerate(values))
    batches = BatchPipeline(BatchConfig(type="batch", batch_size=2), None)(events)
    ser = NumpySerializer(cfg, StreamContext(1, 2, "src"), RunInfo("x", 1))
    return [decode(bytes(m)) for m in ser(batches)]


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_numpy_serializer_round_trip(compression):
    rng = np.random.default_rng(3)
    values = [
        {"a": rng.standard_normal((3, 4)).astype(">f8"), "n": np.int32(k), "s": f"e{k}"}
        for k in range(3)
    ]
    cfg = NumpyConfig(
        type="numpy", fields={"a": "arr", "n": "num", "s": "name"}, compression=compression
    )
    msgs = _numpy_messages(cfg, values)
    assert [m["header"]["n_events"] for m in msgs] == [2, 1]
    assert msgs[0]["header"]["indices"] == [10, 12] and msgs[1]["header"]["indices"] == [14]
    assert msgs[0]["header"]["rank"] == 1 and msgs[0]["header"]["compression"] == compression
    got = np.concatenate([m["arr"] for m in msgs])
    assert got.dtype == np.dtype("<f8")
    np.testing.assert_array_equal(got, np.stack([v["a"] for v in values]))
    assert np.concatenate([m["num"] for m in msgs]).tolist() == [0, 1, 2]
    assert msgs[0]["name"] == ["e0", "e1"]


def test_numpy_message_is_readable_with_numpy_and_lz4_alone():
    """The documented layout, read without lclstreamer."""
    import json
    import struct

    values = [{"a": np.arange(6, dtype=np.uint16).reshape(2, 3)}]
    cfg = NumpyConfig(type="numpy", fields={"a": "a"}, compression="lz4")
    events = iter(Event(0, v) for v in values)
    batches = BatchPipeline(BatchConfig(type="batch", batch_size=1), None)(events)
    msg = bytes(next(NumpySerializer(cfg, StreamContext(0, 1, ""), RunInfo("x", 1))(batches)))
    assert msg[:8] == b"LCLSNPY1"
    (hlen,) = struct.unpack("<I", msg[8:12])
    header = json.loads(msg[12 : 12 + hlen])
    (spec,) = header["arrays"]
    raw = msg[12 + hlen + spec["offset"] :][: spec["nbytes"]]
    arr = np.frombuffer(lz4.frame.decompress(raw), spec["dtype"]).reshape(spec["shape"])
    np.testing.assert_array_equal(arr[0], values[0]["a"])


@pytest.mark.mpi
def test_peaknet_example_two_ranks_to_files(tmp_path):
    cfg = example("peaknet-training.yaml")
    cfg["event_source"]["number_of_events"] = 10
    cfg["event_source"]["detectors"]["jungfrau1M"]["shape"] = [100, 96]
    cfg["processing_pipeline"].update(target_height=128, target_width=128, batch_size=3)
    cfg["data_handlers"] = [{"type": "file", "directory": str(tmp_path / "out"), "prefix": "p"}]
    write_config(tmp_path / "cfg.yaml", cfg)
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], ranks=2, cwd=tmp_path)
    assert res.code == 0, res.stderr
    src = source_of(cfg)
    seen = []
    for path in sorted((tmp_path / "out").glob("*.npmsg")):
        msg = decode(path.read_bytes())
        assert msg["image"].shape[1:] == (1, 128, 128) and msg["image"].dtype == np.float32
        for k, i in enumerate(msg["event_index"]):
            seen.append(int(i))
            frame = src.frame("jungfrau1M", int(i)).astype(np.float64)
            norm = ((frame - frame.mean()) / (frame.std() + 1e-6)).astype(np.float32)
            np.testing.assert_allclose(msg["image"][k, 0, 14:114, 16:112], norm, atol=1e-5)
            assert msg["image"][k, 0, :14].max() == 0.0
            assert msg["image_original_shape"][k].tolist() == [100, 96]
    assert sorted(seen) == list(range(10))


GEOM = """
; two 4 x 5 panels, the second turned by 180 degrees, a 2-pixel gap between them
res = 13333.3
p0/min_fs = 0
p0/max_fs = 4
p0/min_ss = 0
p0/max_ss = 3
p0/corner_x = 0
p0/corner_y = 0
p0/fs = x
p0/ss = y
p1/min_fs = 0
p1/max_fs = 4
p1/min_ss = 4
p1/max_ss = 7
p1/corner_x = 11.0
p1/corner_y = 3.0
p1/fs = -x
p1/ss = -y
"""


def test_panels_are_assembled_through_a_crystfel_geometry(tmp_path):
    (tmp_path / "det.geom").write_text(GEOM)
    frame = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5) + 1
    cfg = _cfg(target_height=6, target_width=14, pad_value=-1.0,
               geometry=str(tmp_path / "det.geom"))  # fmt: skip
    [(out, shapes)] = _run(cfg, [frame])
    want = np.full((4, 12), -1.0, np.float32)
    want[:, 0:5] = frame[0]
    want[:, 7:12] = frame[1][::-1, ::-1]
    expect = np.full((6, 14), -1.0, np.float32)
    expect[1:5, 1:13] = want
    np.testing.assert_array_equal(out[0], expect)
    assert shapes.tolist() == [[4, 12]]
    [(out, _)] = _run(cfg.model_copy(update={"normalize": True}), [frame])
    covered = np.r_[frame[0].ravel(), frame[1].ravel()].astype(np.float64)
    norm = (frame[0] - covered.mean()) / (covered.std() + cfg.eps)
    np.testing.assert_allclose(out[0, 1:5, 1:6], norm, atol=1e-6)
    assert (out[0, 1:5, 6:8] == -1.0).all()  # the gap stays padding


def test_geometry_errors_name_file_line_and_key(tmp_path):
    from lclstreamer.errors import ConfigError

    (tmp_path / "bad.geom").write_text(GEOM.replace("p1/corner_x = 11.0", "p1/corner_x = eleven"))
    with pytest.raises(ConfigError, match=r"bad.geom, line 16: p1/corner_x = 'eleven'"):
        PeaknetPipeline(_cfg(geometry=str(tmp_path / "bad.geom")), None)
    (tmp_path / "dir.geom").write_text(GEOM.replace("p1/fs = -x", "p1/fs = sideways"))
    with pytest.raises(ConfigError, match=r"p1/fs: cannot read the direction 'sideways'"):
        PeaknetPipeline(_cfg(geometry=str(tmp_path / "dir.geom")), None)
    with pytest.raises(ConfigError, match="cannot read geometry"):
        PeaknetPipeline(_cfg(geometry=str(tmp_path / "none.geom")), None)
    (tmp_path / "big.geom").write_text(GEOM.replace("p1/max_ss = 7", "p1/max_ss = 9"))
    pipe = PeaknetPipeline(_cfg(geometry=str(tmp_path / "big.geom")), None)
    with pytest.raises(ConfigError, match=r"panel p1 reads ss 4..9.*outside the data array"):
        list(pipe(iter([Event(0, {"img": np.ones((2, 4, 5))})])))
