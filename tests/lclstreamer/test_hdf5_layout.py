"""The HDF5 serializer's in-place images: uncompressed numeric batches are made from the
layout of one image h5py wrote, and must be exactly what h5py writes."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from lclstreamer import models as m
from lclstreamer.memfile import MemoryFile
from lclstreamer.pipeline import BatchPipeline
from lclstreamer.protocols import Batch, Event, StreamContext
from lclstreamer.serializers import hdf5
from lclstreamer.serializers.h5layout import FIRST_MARK, SEQ_MARK, find_layout
from lclstreamer.serializers.hdf5 import SMALL_ROW, HDF5Serializer

from .helpers import read_message

pytestmark = [pytest.mark.timeout(60)]

CTX = StreamContext(1, 3, "src-id")
BIG = (130, 130)  # float32 rows above SMALL_ROW: written row by row by h5py
assert 4 * BIG[0] * BIG[1] > SMALL_ROW


def _event(i: int) -> Event:
    rng = np.random.default_rng(i)
    wave = rng.random((2, 3, 3), dtype=np.float32)
    return Event(
        10 * i,
        {
            "ts": np.uint64(1_700_000_000 << 32 | i),
            "s": float(i) / 3,
            "calib": rng.integers(0, 60_000, (2, 3, 6), dtype=np.uint16),
            # event 4 gives float64 where the field is float32 (cast, as h5py would)
            "wave": wave.astype(np.float64) if i == 4 else wave,
            "frame": rng.random(BIG, dtype=np.float32),
            "empty": np.zeros((0,), np.float32),
            "flag": np.bool_(i % 2),
            "be": (np.arange(3) * i).astype(">i4"),
        },
    )


def _serializer(compression: str = "none", fields=None) -> HDF5Serializer:
    fields = fields or {k: f"/g/{k}" for k in _event(0).data}
    cfg = m.HDF5Serializer(type="hdf5", compression=compression, fields=fields)
    return HDF5Serializer(cfg, CTX, None)


def _by_h5py(ser: HDF5Serializer, batch: Batch) -> bytes:
    """The image the serializer's h5py path writes for `batch`."""
    f = MemoryFile()
    with h5py.File(f, "w") as h5:
        ser._write(h5, batch, batch.seq, batch.first_event)
    return bytes(f.view())


def _messages(ser: HDF5Serializer, events: list[Event], size: int) -> list[tuple[bytes, bytes]]:
    """(message, what the h5py path writes for the same batch) for each batch, taken
    while the batch is valid (the pipeline reuses its columns)."""
    pipe = BatchPipeline(m.BatchPipeline(type="batch", batch_size=size), CTX)
    return [(bytes(msg), _by_h5py(ser, b)) for b in pipe(iter(events)) for msg in ser(iter([b]))]


def test_images_made_in_place_are_the_bytes_h5py_writes():
    events = [_event(i) for i in range(11)]
    ser = _serializer()
    pairs = _messages(ser, events, 3)
    assert len(pairs) == 4
    assert ser.in_place == 2, "h5py wrote the first image of each batch size, not the others"
    for message, written in pairs:
        assert message == written, "byte for byte what h5py writes"
    for k, (message, _) in enumerate(pairs):
        got = read_message(message)
        first = 3 * k
        assert got["attrs"] == {
            "rank": 1,
            "ranks": 3,
            "seq": k,
            "n_events": len(events[first : first + 3]),
            "first_event": 10 * first,
            "source_identifier": "src-id",
        }
        for name in events[0].data:
            want = np.stack([np.asarray(e.data[name]) for e in events[first : first + 3]])
            have = got[f"/g/{name}"]
            assert have.shape == want.shape and np.array_equal(have, want), name
            assert got["filters"][f"/g/{name}"] == (None, []), "contiguous, unfiltered"
        assert got["/g/wave"].dtype == np.float32 and got["/g/be"].dtype == np.dtype(">i4")


def test_strings_and_compression_are_left_to_h5py():
    events = [_event(i) for i in range(5)]
    for e in events:
        e.data["who"] = "x" * (e.index // 10 + 1)  # the image layout depends on the text
    ser = _serializer(fields={k: f"/g/{k}" for k in events[0].data})
    pairs = _messages(ser, events, 2)
    assert ser.in_place == 0
    assert [v.decode() for v in read_message(pairs[1][0])["/g/who"]] == ["xxx", "xxxx"]
    ser = _serializer("gzip", {"calib": "/calib", "ts": "/ts"})
    pairs = _messages(ser, events, 2)
    assert ser.in_place == 0
    assert read_message(pairs[0][0])["filters"]["/calib"] == ((1, 2, 3, 6), [1])


@pytest.mark.parametrize(
    "spoil",
    [
        lambda lay: dataclasses.replace(lay, seq_at=lay.first_at, first_at=lay.seq_at),
        lambda lay: dataclasses.replace(
            lay,
            fields=tuple(dataclasses.replace(p, offset=p.offset - 4) for p in lay.fields),
        ),
        lambda lay: dataclasses.replace(lay, fixed=((0, b"\0" * 64), *lay.fixed[1:])),
    ],
    ids=["attributes swapped", "data shifted", "superblock wiped"],
)
def test_a_layout_that_does_not_reproduce_its_image_is_not_used(monkeypatch, spoil):
    real = hdf5.find_layout
    monkeypatch.setattr(hdf5, "find_layout", lambda *a: spoil(real(*a)))
    events = [_event(i) for i in range(4)]
    ser = _serializer()
    pairs = _messages(ser, events, 2)
    assert ser.in_place == 0, "the check refused the layout; h5py wrote every image"
    for message, written in pairs:
        assert message == written


def _image_with_marks(fields: dict[str, np.ndarray]) -> tuple[bytes, dict]:
    f = MemoryFile()
    with h5py.File(f, "w") as h5:
        h5.attrs["seq"] = SEQ_MARK
        h5.attrs["first_event"] = FIRST_MARK
        places = {}
        for name, value in fields.items():
            d = h5.create_dataset(name, data=value)
            places[name] = (d.id.get_offset(), value.dtype, value.shape)
    return bytes(f.view()), places


def test_find_layout_refuses_what_it_cannot_place():
    image, places = _image_with_marks({"a": np.arange(6.0), "b": np.arange(4, dtype=np.int8)})
    layout = find_layout(image, places)
    assert layout is not None and layout.size == len(image)
    assert sum(len(d) for _, d in layout.fixed) == len(image) - 6 * 8 - 4
    (off_a, dt_a, shape_a), dt_b = places["a"], places["b"][1]
    assert find_layout(image, {**places, "a": (None, dt_a, shape_a)}) is None, "no address"
    assert find_layout(image, {**places, "b": (off_a + 8, dt_b, (4,))}) is None, "overlap"
    assert find_layout(image, {**places, "a": (len(image) - 8, dt_a, shape_a)}) is None, "past end"
    unmarked = image.replace(np.int64(SEQ_MARK).tobytes(), bytes(8))
    assert find_layout(unmarked, places) is None, "no seq marker"
    twice, _ = _image_with_marks({"a": np.arange(6.0), "m": np.array([FIRST_MARK] * 2)})
    _, p2 = _image_with_marks({"a": np.arange(6.0), "m": np.array([FIRST_MARK] * 2)})
    assert find_layout(twice, p2) is not None, "markers inside data regions do not count"
    doubled = image + np.int64(FIRST_MARK).tobytes()
    assert find_layout(doubled, places) is None, "a marker found twice"


def test_memory_file_claim_grows_while_an_old_view_is_alive():
    mf = MemoryFile(capacity=8)
    old = mf.claim(4)
    old[:] = b"abcd"
    new = mf.claim(100)  # the old view pins the buffer: a new one is made
    assert len(new) == 100 and bytes(old) == b"abcd" and mf.view().nbytes == 100
