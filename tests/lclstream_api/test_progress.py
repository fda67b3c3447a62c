"""Percent progress of `lclstream get`: events counted from real HDF5 batches."""

from pathlib import Path

import h5py

from lclstream_api.client.receive import EventCounter, percent


def write_batch(path: Path, rank: int, seq: int, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs.update({"rank": rank, "seq": seq, "n_events": n})


def test_counter_reads_each_batch_once_and_skips_duplicates_and_partial_files(tmp_path):
    a, b = tmp_path / "consumer-00", tmp_path / "consumer-01"
    counter = EventCounter([a, b])
    assert counter.update() == 0  # no folders yet
    write_batch(a / "00000000.msg", 0, 0, 4)
    write_batch(b / "00000000.msg", 1, 0, 4)
    assert counter.update() == 8
    assert counter.update() == 8  # nothing new
    write_batch(b / "00000001.msg", 0, 0, 4)  # a redelivered batch (same rank, seq)
    (a / "00000001.msg").write_bytes(b"\x89HDF half-written")
    assert counter.update() == 8
    write_batch(a / "00000001.msg", 0, 1, 2)  # now complete: counted next time
    assert counter.update() == 10


def test_percent_only_when_the_size_is_known():
    assert percent(48, 96) == ", 50% of 96 events"
    assert percent(96, 96) == ", 100% of 96 events"
    assert percent(120, 96) == ", 100% of 96 events"  # never above 100
    assert percent(5, None) == "" and percent(5, 0) == ""
