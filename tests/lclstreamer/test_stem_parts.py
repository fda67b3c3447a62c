"""stem-count's part files (lclstreamer/stem/parts.py): what a rank made durable before
acknowledging it, read back by the next job writing the same output."""

from __future__ import annotations

import numpy as np
import pytest

from lclstreamer.errors import DataError
from lclstreamer.stem.counting import Thresholds
from lclstreamer.stem.parts import RECORD, PartWriter, parts_dir, read_parts

pytestmark = pytest.mark.timeout(60)
SCAN, SHAPE, SECTORS = (32, 32), (128, 128), 4
TH = Thresholds(mean=0.1, sigma=2.0, background=8.1, xray=20.1, samples=10)
ROWS, WIDTH = SHAPE[0], SHAPE[1] // SECTORS


def _writer(folder, name="a-rank0.part") -> PartWriter:
    return PartWriter(folder / name, SCAN, SHAPE, SECTORS)


def test_records_round_trip_and_counted_frames_supersede_parked_sectors(tmp_path):
    sector = np.arange(ROWS * WIDTH, dtype=np.uint16).reshape(ROWS, WIDTH)
    w = _writer(tmp_path)
    w.thresholds(TH)
    w.park(7, 2, sector)
    w.park(9, 1, sector[:, ::-1])  # a strided view is written as its pixels
    w.events(7, 1, 4, np.array([3, 5], np.uint32))  # frame 7 then completed and counted
    w.events(8, 2, 3, np.array([11], np.uint32))
    w.bad()
    w.close()
    rec = read_parts(tmp_path, SCAN, SHAPE, SECTORS)
    assert (rec.files, rec.torn, rec.bad_messages) == (1, 0, 1)
    assert rec.thresholds == [TH]
    assert sorted(rec.counted) == [7, 8] and rec.counted[7].events.tolist() == [3, 5]
    assert (rec.counted[8].status, rec.counted[8].sectors) == (2, 3)
    assert list(rec.parked) == [9] and np.array_equal(rec.parked[9][1], sector[:, ::-1])
    assert rec.messages == 4 + 3 + 1 + 1  # frame 7's sectors, frame 8's, 1 parked, 1 bad


def test_a_record_cut_short_at_the_end_is_ignored(tmp_path):
    w = _writer(tmp_path)
    w.thresholds(TH)
    w.events(1, 1, 4, np.array([1, 2, 3], np.uint32))
    w.events(2, 1, 4, np.array([4], np.uint32))
    w.close()
    path = tmp_path / "a-rank0.part"
    path.write_bytes(path.read_bytes()[:-2])  # killed in the middle of the last write
    rec = read_parts(tmp_path, SCAN, SHAPE, SECTORS)
    assert rec.torn == 1 and list(rec.counted) == [1]


def test_no_folder_recovers_nothing(tmp_path):
    rec = read_parts(tmp_path / "none", SCAN, SHAPE, SECTORS)
    assert (rec.files, rec.messages, rec.counted, rec.parked) == (0, 0, {}, {})
    assert parts_dir(tmp_path / "c.h5") == tmp_path / "c.h5.parts"


@pytest.mark.parametrize(
    "damage, why",
    [
        ("other scan", "a part file of another scan"),
        ("kind", "unknown record kind b'Z'"),
        ("events first", "events before any thresholds"),
        ("sector size", "parked sector 1 of 6 bytes does not fit"),
    ],
)
def test_damaged_or_foreign_part_files_are_one_located_error(tmp_path, damage, why):
    path = tmp_path / "a-rank0.part"
    if damage == "other scan":
        PartWriter(path, (8, 8), SHAPE, SECTORS).close()
    else:
        w = _writer(tmp_path)
        if damage == "kind":
            w.thresholds(TH)
            w._f.write(RECORD.pack(b"Z", 0, 0, 0, 0))
        elif damage == "events first":
            w.events(1, 1, 4, np.array([1], np.uint32))
        else:
            w._f.write(RECORD.pack(b"P", 3, 1, 0, 6) + b"\x00" * 6)
        w.close()
    with pytest.raises(DataError, match=why) as err:
        read_parts(tmp_path, SCAN, SHAPE, SECTORS)
    assert str(err.value).startswith(f"{path}: record at byte ")
