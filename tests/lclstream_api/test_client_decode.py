"""Decoding lclstreamer's real messages into batches (field names, not paths)."""

from __future__ import annotations

import io

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from lclstream_api.client import DecodeError, decoder_for
from lclstream_api.client.decode import BufferFile, HDF5Decoder

pytestmark = pytest.mark.timeout(120)


def by_index(batches) -> dict[int, dict]:
    return {int(ev["index"]): ev for b in batches for ev in b.events()}


def test_hdf5_batches_by_field_name_with_their_attributes(made):
    m = made["hdf5"]
    dec = decoder_for(m.config)
    seen = set()
    for path in m.files:
        message = bytearray(path.read_bytes())
        batch = dec(memoryview(message))
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(batch["frames"], f["/data/frames"][()])
            np.testing.assert_array_equal(batch["index"], f["/data/index"][()])
            assert (batch.rank, batch.seq, batch.n_events, batch.first_event) == tuple(
                int(f.attrs[k]) for k in ("rank", "seq", "n_events", "first_event")
            )
        assert set(batch) == {"frames", "index"} and batch.key == (batch.rank, batch.seq)
        before = batch["frames"].copy()
        message[:] = bytes(len(message))  # the message is gone: the batch owns its arrays
        message.append(0)  # and nothing holds it once decoded (a held buffer cannot resize)
        np.testing.assert_array_equal(batch["frames"], before)
        assert batch["frames"].flags.writeable
        seen.add(batch.key)
    assert len(seen) == len(m.files) == 6
    assert sorted(by_index(decoder_for(m.config)(memoryview(p.read_bytes())) for p in m.files)) \
        == list(range(24))  # fmt: skip


def test_hdf5_without_a_config_gives_dataset_paths(made):
    batch = decoder_for(None)(memoryview(made["hdf5"].files[0].read_bytes()))
    assert set(batch) == {"/data/frames", "/data/index"}


def test_numpy_and_msgpack_decode_to_the_same_events(made):
    want = by_index(decoder_for(made["hdf5"].config)(memoryview(p.read_bytes()))
                    for p in made["hdf5"].files)  # fmt: skip
    np_batches = [decoder_for(made["numpy"].config)(memoryview(p.read_bytes()))
                  for p in made["numpy"].files]  # fmt: skip
    assert {b.key for b in np_batches} == {(r, s) for r in (0, 1) for s in range(3)}
    got = by_index(np_batches)
    assert sorted(got) == sorted(want)
    for i, ev in want.items():
        np.testing.assert_array_equal(got[i]["frames"], ev["frames"])
    mp = [decoder_for(made["msgpack"].config)(memoryview(p.read_bytes()))
          for p in made["msgpack"].files]  # fmt: skip
    assert all(b.n_events == 1 and b.key is None for b in mp)
    got = by_index(mp)
    assert sorted(got) == sorted(want)
    for i, ev in want.items():  # CrystFEL's layout: panels stacked into 2-D, float32
        np.testing.assert_array_equal(got[i]["frames"], ev["frames"].reshape(32, 16))


def test_bad_messages_and_configs_are_one_clear_line(made):
    dec = decoder_for(made["hdf5"].config)
    with pytest.raises(DecodeError, match=r"not an HDF5 batch \(11 bytes\)"):
        dec(memoryview(b"hello world"))
    missing = HDF5Decoder({"frames": "/data/frames", "peaks": "/data/peaks"})
    with pytest.raises(DecodeError, match="no dataset /data/peaks .*/data/frames"):
        missing(memoryview(made["hdf5"].files[0].read_bytes()))
    with pytest.raises(DecodeError, match="not an lclstreamer numpy message"):
        decoder_for(made["numpy"].config)(memoryview(made["hdf5"].files[0].read_bytes()))
    with pytest.raises(DecodeError, match="no decoder for 'simplon' yet"):
        decoder_for({"data_serializer": {"type": "simplon", "image": "frames"}})
    with pytest.raises(DecodeError, match="data_serializer: missing"):
        decoder_for({})


def hdf5_message(**attrs) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f["/data/frames"] = np.arange(12, dtype=np.float32).reshape(3, 4)
        f.attrs.update(attrs)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("value", "shown"), [("three", r"object\[\]"), (np.array([1, 2]), r"int64\[2\]")]
)
def test_a_batch_count_that_is_not_an_integer_is_one_clear_line(value, shown):
    dec = HDF5Decoder({"frames": "/data/frames"})
    with pytest.raises(DecodeError, match=rf"^HDF5 batch attribute rank: {shown}, not an integer$"):
        dec(hdf5_message(n_events=3, rank=value, seq=0))
    batch = dec(hdf5_message(n_events=np.uint32(3), rank=np.array([2]), seq=np.int16(5)))
    assert (batch.n_events, batch.rank, batch.seq, batch.first_event) == (3, 2, 5, None)
    assert dec(hdf5_message()).n_events == 3  # no n_events: the length of the first field


def test_buffer_file_reads_like_a_bytes_file_without_copying():
    data = bytes(range(256)) * 40
    owned = bytearray(data)
    raw, ref = BufferFile(owned), io.BytesIO(data)
    for whence, offset, size in [(0, 0, 100), (1, 50, 300), (2, -10, 64), (0, 10_000, 8),
                                 (0, len(data), 1), (1, -20, 0), (0, 7, len(data))]:  # fmt: skip
        assert raw.seek(offset, whence) == ref.seek(offset, whence)
        got, want = bytearray(size), bytearray(size)
        assert raw.readinto(got) == ref.readinto(want) and got == want
        assert raw.tell() == ref.tell()
    with pytest.raises(ValueError, match="before the start of the message"):
        raw.seek(-1)
    owned[0] = 255  # reads come from the buffer itself, not a copy taken when opened
    raw.seek(0)
    one = bytearray(1)
    raw.readinto(one)
    assert one == b"\xff"
    with pytest.raises(BufferError):
        owned.append(0)  # held by the open file
    raw.close()
    owned.append(0)  # closing released it
