"""Decoding lclstreamer's real messages into batches (field names, not paths)."""

from __future__ import annotations

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from lclstream_api.client import DecodeError, decoder_for
from lclstream_api.client.decode import HDF5Decoder

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
