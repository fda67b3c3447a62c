"""psana2 on the real library: xtc2 files written by psana's own `xtcwriter` (and the
small-data files psana2's MPI mode reads, by `smdwriter`), streamed by lclstreamer and
compared with what a bare psana loop reads from the same files.

xtcwriter writes run 14 of xpptut15: an area detector `xppcspad` (2 segments of 3x6
uint16), a digitizer `xpphsd` (raw segments with arrays array0Pgp/array1Pgp, fex segments
with arrayFex), scan values motor1/motor2 and two EPICS PVs that first appear after the
first SlowUpdate; counting timestamps (-t) make every event's timestamp unique.
Needs the `psana` extra (pip install -e '.[psana]', which needs Debian libkrb5-dev).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lclstreamer.errors import DataError
from lclstreamer.models import Psana2EventSource
from lclstreamer.sources.psana import as_array
from lclstreamer.sources.psana2 import calibration_wanted, datasource_kwargs, event_cap
from tests.support.ci import unavailable

from .helpers import LCLSTREAMER, MPIRUN, read_message, run_cli, write_config
from .test_nngstream import DialingConsumer

pytestmark = [pytest.mark.timeout(180)]

EVENTS = 40
ENABLE = "pip install -e '.[psana]' (needs Debian libkrb5-dev), or make test"


def _psana_bin() -> Path:
    """Where the psana wheel puts xtcwriter/smdwriter (site-packages/bin)."""
    import psana

    return Path(psana.__file__).resolve().parents[1] / "bin"


@pytest.fixture(scope="session")
def xtc2(tmp_path_factory) -> Path:
    """A run directory written by psana's xtcwriter + smdwriter (made once per session)."""
    try:
        import psana  # noqa: F401
    except ImportError as exc:
        unavailable(f"psana is not installed ({exc})", ENABLE)
    tools = _psana_bin()
    if not (tools / "xtcwriter").exists():
        unavailable(f"psana's xtcwriter is not in {tools}", ENABLE)
    root = tmp_path_factory.mktemp("xtc2")
    (root / "smalldata").mkdir()
    data = root / "xpptut15-r0014-s000-c000.xtc2"
    subprocess.run(
        [tools / "xtcwriter", "-f", data, "-t", "-n", str(EVENTS)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [tools / "smdwriter", "-f", data, "-o", root / "smalldata" / (data.stem + ".smd.xtc2")],
        check=True,
        capture_output=True,
    )
    return root


BARE_LOOP = """
import json, sys
import numpy as np
from psana import DataSource

ds = DataSource(files=sys.argv[1], skip_calib_load="all")
out = {}
for run in ds.runs():
    cs, hsd = run.Detector("xppcspad"), run.Detector("xpphsd")
    motor, pv = run.Detector("motor1"), run.Detector("HX2:DVD:GCC:01:PMON")
    for evt in run.events():
        raw, fex = hsd.raw._segments(evt), hsd.fex._segments(evt)
        out[evt.timestamp] = {
            "calib": cs.raw.calib(evt).tolist(),
            "image": cs.raw.image(evt).tolist(),
            "wave": np.stack([raw[k].array0Pgp for k in sorted(raw)]).tolist(),
            "fex": np.stack([fex[k].arrayFex for k in sorted(fex)]).tolist(),
            "motor1": motor(evt),
            "pv": pv(evt),
        }
    info = [run.expt, run.runnum, run.timestamp]
print(json.dumps({"events": out, "run": info}))
"""


@pytest.fixture(scope="session")
def bare(xtc2) -> dict:
    """What a bare psana2 loop reads from the file, by timestamp (in its own process)."""
    import json

    res = subprocess.run(
        [sys.executable, "-c", BARE_LOOP, str(next(xtc2.glob("*.xtc2")))],
        check=True,
        capture_output=True,
        text=True,
    )
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    doc["events"] = {int(k): v for k, v in doc["events"].items()}
    return doc


def _config(source: dict, handler: dict, **extra) -> dict:
    data_sources = {
        "calib": {"type": "detector", "source": "xppcspad", "kind": "calib"},
        "image": {"type": "detector", "source": "xppcspad", "kind": "image"},
        "wave": {"type": "detector", "source": "xpphsd", "field": "raw.array0Pgp"},
        "fex": {"type": "detector", "source": "xpphsd", "field": "fex.arrayFex"},
        "timestamp": {"type": "timestamp"},
        "index": {"type": "event_index"},
        "motor1": {"type": "scalar", "source": "motor1"},
        "pv": {"type": "scalar", "source": "HX2:DVD:GCC:01:PMON"},
        "run": {"type": "run_info", "key": "run"},
        "experiment": {"type": "run_info", "key": "experiment"},
        "run_start": {"type": "run_info", "key": "timestamp"},
        **extra,
    }
    return {
        "source_identifier": "xtcwriter",
        "skip_incomplete_events": True,
        "event_source": {"type": "psana2", **source},
        "data_sources": data_sources,
        "processing_pipeline": {"type": "batch", "batch_size": 4},
        "data_serializer": {"type": "hdf5", "fields": {k: f"/{k}" for k in data_sources}},
        "data_handlers": [handler],
    }


def _check_against_bare(messages: list[dict], bare: dict) -> list[int]:
    """Every message's arrays equal the bare loop's for the same timestamp; the stamps seen."""
    expt, runnum, start = bare["run"]
    seen: list[int] = []
    for m in messages:
        for row, ts in enumerate(m["/timestamp"].tolist()):
            want = bare["events"][ts]
            assert np.array_equal(m["/calib"][row], want["calib"])
            assert np.array_equal(m["/image"][row], want["image"])
            assert np.array_equal(m["/wave"][row], want["wave"])
            assert np.array_equal(m["/fex"][row], want["fex"])
            assert m["/motor1"][row] == want["motor1"]
            assert "/pv" not in m or m["/pv"][row] == want["pv"]
            seen.append(ts)
        assert set(m["/run"].tolist()) == {runnum} and set(m["/run_start"].tolist()) == {start}
        if "/experiment" in m:
            assert {e.decode() if isinstance(e, bytes) else e for e in m["/experiment"]} == {expt}
        assert m["/calib"].dtype == np.uint16 and m["/calib"].shape[1:] == (2, 3, 6)
    return seen


def _complete(bare: dict) -> list[int]:
    """Timestamps of the events that have every field (the PV appears after a SlowUpdate)."""
    return sorted(ts for ts, v in bare["events"].items() if v["pv"] is not None)


def test_bare_loop_sees_the_written_run(bare):
    assert len(bare["events"]) == EVENTS
    assert bare["run"][:2] == ["xpptut15", 14]
    assert 0 < len(_complete(bare)) < EVENTS, "some events precede the first EPICS update"


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [1, 4])
def test_psana2_mpi_mode_to_nngstream_every_event_once(
    tmp_path, spawn, free_port, xtc2, bare, ranks
):
    """psana2 partitions (experiment/run/dir): mpirun -n 1 serial, -n 4 smd0 + eb + 2 bd."""
    in_url, out_url = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    buffer = spawn(["nngstream", in_url, out_url, "--producers", str(ranks)], name="nngstream")
    for url in (in_url, out_url):
        buffer.wait_port(int(url.rsplit(":", 1)[1]))
    consumer = DialingConsumer(out_url)
    consumer.start()
    assert consumer.connected.wait(20), "consumer could not connect to the buffer"

    source = {"experiment": "xpptut15", "run": 14, "directory": str(xtc2), "batch_size": 3}
    cfg = _config(source, {"type": "nng_push", "urls": [in_url]})
    res = run_cli(
        ["-c", str(write_config(tmp_path / "c.yaml", cfg)), "--no-progress"],
        ranks=ranks,
        timeout=120,
    )
    assert res.code == 0, res.stderr
    assert buffer.wait(60) == 0, buffer.stderr()
    consumer.join(30)
    assert not consumer.is_alive(), "consumer did not see the end of the stream"

    seen = _check_against_bare(consumer.messages, bare)
    assert sorted(seen) == _complete(bare), "every complete event exactly once"
    summary = res.summary()
    assert summary["events"] == len(seen) and summary["ranks"] == ranks
    assert summary["skipped"] == EVENTS - len(seen)
    senders = {int(m["attrs"]["rank"]) for m in consumer.messages}
    if ranks == 4:
        # which big-data rank gets which batch is psana's choice (whoever asks first)
        assert senders and senders <= {2, 3}, "only psana2's big-data ranks receive events"
        idx = np.concatenate([m["/index"] for m in consumer.messages])
        assert len(set(idx.tolist())) == len(idx), "event indices are unique across ranks"
    else:
        assert senders == {0}


@pytest.mark.mpi
def test_psana2_files_mode_lclstreamer_partitions(tmp_path, xtc2, bare):
    """By `files`, each of 2 ranks reads the file and keeps every other event (by position)."""
    out = tmp_path / "out"
    cfg = _config(
        {"files": [str(next(xtc2.glob("*.xtc2")))]}, {"type": "file", "directory": str(out)}
    )
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg)), "--no-progress"], ranks=2)
    assert res.code == 0, res.stderr
    messages = [read_message(p) for p in sorted(out.glob("*.h5"))]
    seen = _check_against_bare(messages, bare)
    assert sorted(seen) == _complete(bare)
    order = sorted(bare["events"])
    for m in messages:
        idx = m["/index"].tolist()
        assert all(i % 2 == m["attrs"]["rank"] for i in idx)
        assert [order[i] for i in idx] == m["/timestamp"].tolist(), "index = position in run"


@pytest.mark.mpi
def test_psana2_numbers_only_serially_match_the_bare_loop(tmp_path, xtc2, bare):
    """Only numeric fields, uncompressed (the benchmark's case): the HDF5 serializer makes
    the images in place from one h5py image's layout; they hold what the bare loop reads,
    every event once, in contiguous datasets."""
    out = tmp_path / "out"
    xtc = str(next(xtc2.glob("*.xtc2")))
    cfg = _config({"files": xtc}, {"type": "file", "directory": str(out)})
    for name in ("experiment", "pv"):
        del cfg["data_sources"][name], cfg["data_serializer"]["fields"][name]
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg)), "--no-progress"], ranks=1)
    assert res.code == 0, res.stderr
    messages = [read_message(p) for p in sorted(out.glob("*.h5"))]
    assert sorted(_check_against_bare(messages, bare)) == sorted(bare["events"])
    assert [m["attrs"]["seq"] for m in messages] == list(range(EVENTS // 4))
    for m in messages:
        assert all(chunks is None for chunks, _ in m["filters"].values()), "contiguous"


def test_psana2_max_events_and_field_list(tmp_path, xtc2, bare):
    out = tmp_path / "out"
    both = {"type": "detector", "source": "xpphsd", "field": ["raw.array0Pgp", "raw.array1Pgp"]}
    cfg = _config(
        {"files": str(next(xtc2.glob("*.xtc2")))}, {"type": "file", "directory": str(out)}
    )
    cfg["skip_incomplete_events"] = False
    for name in ("pv",):
        del cfg["data_sources"][name]
        del cfg["data_serializer"]["fields"][name]
    cfg["data_sources"]["both"] = both
    cfg["data_serializer"]["fields"]["both"] = "/both"
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg)), "-n", "5", "--no-progress"])
    assert res.code == 0, res.stderr
    messages = [read_message(p) for p in sorted(out.glob("*.h5"))]
    stamps = np.concatenate([m["/timestamp"] for m in messages]).tolist()
    assert stamps == sorted(bare["events"])[:5]
    assert all(m["/both"].shape[1:] == (2, 2, 3, 3) for m in messages)


@pytest.mark.mpi
def test_psana2_mpi_mode_max_events_and_too_few_ranks(tmp_path, xtc2, bare):
    source = {"experiment": "xpptut15", "run": 14, "directory": str(xtc2), "batch_size": 2}
    cfg = _config(source, {"type": "null"})
    del cfg["data_sources"]["pv"], cfg["data_serializer"]["fields"]["pv"]
    path = write_config(tmp_path / "c.yaml", cfg)
    res = run_cli(["-c", str(path), "-n", "7", "--no-progress"], ranks=4)
    assert res.code == 0, res.stderr
    assert res.summary()["events"] == 7 and res.summary()["skipped"] == 0

    res = run_cli(["-c", str(path), "--no-progress"], ranks=2)
    assert res.code == 1 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("lclstreamer:")]
    assert len(errors) == 1 and "Too few MPI cores to run parallel psana" in errors[0]


@pytest.mark.mpi
def test_psana2_mpi_mode_sigterm_stops_every_rank(tmp_path, spawn, xtc2):
    """One SIGTERM: the big-data ranks stop, tell psana to terminate and drain what it
    still sends; no rank starts another run; rank 0's summary is marked interrupted and
    counts exactly what was written. (mpirun may end with 9 instead of 130: psana's
    event-builder rank can still be finalizing MPI when the others exit.)"""
    run = tmp_path / "run"
    (run / "smalldata").mkdir(parents=True)
    data = run / "xpptut15-r0014-s000-c000.xtc2"
    tools = _psana_bin()
    subprocess.run(
        [tools / "xtcwriter", "-f", data, "-t", "-n", "100000"], check=True, capture_output=True
    )
    subprocess.run(
        [tools / "smdwriter", "-f", data, "-o", run / "smalldata" / (data.stem + ".smd.xtc2")],
        check=True,
        capture_output=True,
    )
    out = tmp_path / "out"
    source = {"experiment": "xpptut15", "run": 14, "directory": str(run), "batch_size": 20}
    cfg = _config(source, {"type": "file", "directory": str(out)})
    del cfg["data_sources"]["pv"], cfg["data_serializer"]["fields"]["pv"]
    path = write_config(tmp_path / "c.yaml", cfg)
    proc = spawn([MPIRUN, "-n", "4", LCLSTREAMER, "-c", str(path), "--no-progress"])
    deadline = time.monotonic() + 60
    while len(list(out.glob("*.h5"))) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) != 0
    summary = [json.loads(x) for x in proc.stdout().splitlines() if x.startswith('{"events"')]
    assert summary and summary[-1]["interrupted"] is True, proc.stderr()
    assert 0 < summary[-1]["events"] < 100_000
    messages = [read_message(p) for p in sorted(out.glob("*.h5"))]
    assert len(messages) == summary[-1]["batches"]
    stamps = np.concatenate([m["/timestamp"] for m in messages])
    assert len(stamps) == summary[-1]["events"] == len(set(stamps.tolist()))
    assert "Traceback" not in proc.stderr()


@pytest.mark.mpi
@pytest.mark.parametrize("by", ["files", "run"])
def test_psana2_upstream_dialect_streams_the_same_data(tmp_path, xtc2, bare, by):
    """A config in upstream lclstreamer's dialect (upstream type names, the data and the
    event cap in `source_identifier`) streams what the bare loop reads: the same arrays and
    PV values for every complete event of the first 25, as float64 (upstream's dtype). By
    files on one rank; by exp/run/dir under psana2's MPI mode on 4 ranks."""
    file = next(xtc2.glob("*.xtc2"))
    ident = f"files={file}" if by == "files" else f"exp=xpptut15,run=14,dir={xtc2}"

    def iface(name: str, fields: str | None = None) -> dict:
        out = {"type": "Psana2DetectorInterface", "psana_name": name}
        return out if fields is None else {**out, "psana_fields": fields}

    upstream = {
        "source_identifier": f"{ident},max_events=25",
        "skip_incomplete_events": True,
        "event_source": {"type": "Psana2EventSource"},
        "data_sources": {
            "calib": iface("xppcspad", "raw.calib"),
            "image": iface("xppcspad", "raw.image"),
            "wave": iface("xpphsd", "raw.array0Pgp"),
            "fex": iface("xpphsd", "fex.arrayFex"),
            "pv": iface("HX2:DVD:GCC:01:PMON"),
            "timestamp": {"type": "Psana2Timestamp"},
            "run": {"type": "Psana2RunInfo"},
        },
        "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 4},
        "data_serializer": {
            "type": "HDF5BinarySerializer",
            "fields": {k: f"/{k}" for k in ("calib", "image", "wave", "fex", "pv", "timestamp",
                                            "run")},
        },
        "data_handlers": [{"type": "BinaryFileWritingDataHandler", "write_directory": "out"}],
    }  # fmt: skip
    res = run_cli(
        ["-c", str(write_config(tmp_path / "up.yaml", upstream)), "--no-progress"],
        ranks=1 if by == "files" else 4,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.code == 0, res.stderr
    messages = [read_message(p) for p in sorted((tmp_path / "out").glob("*.h5"))]
    assert messages, "no message written"
    seen = []
    for m in messages:
        for row, ts in enumerate(m["/timestamp"].tolist()):
            want = bare["events"][ts]
            for key in ("calib", "image", "wave", "fex"):
                assert m[f"/{key}"].dtype == np.float64, key
                assert np.array_equal(m[f"/{key}"][row], want[key]), (key, ts)
            assert m["/pv"][row] == want["pv"]
            seen.append(ts)
        assert set(m["/run"].tolist()) == {bare["run"][1]}
    first = sorted(bare["events"])[:25]
    want = [ts for ts in first if bare["events"][ts]["pv"] is not None]
    assert sorted(seen) == want, "the same events, each once"
    assert res.summary()["skipped"] == 25 - len(seen)


BAD = [
    ({"files": "/nonexistent/x.xtc2"}, {}, "psana2: no such xtc2 file: /nonexistent/x.xtc2"),
    (
        {"experiment": "xpptut15", "run": 99, "directory": "DIR"},
        {},
        "no small-data files of run 99",
    ),
    (
        {"files": "FILE"},
        {"calib": {"type": "detector", "source": "nodet"}},
        "psana2: no detector 'nodet' in this run",
    ),
    (
        {"files": "FILE"},
        {"calib": {"type": "detector", "source": "xpphsd", "field": "fex.nofield"}},
        "the detector's data has no field 'nofield'",
    ),
    (
        {"files": "FILE"},
        {"calib": {"type": "detector", "source": "xppcspad", "field": "nothing.calib"}},
        "xppcspad has no 'nothing'",
    ),
    (
        {"files": "FILE"},
        {"calib": {"type": "detector", "source": "xppcspad", "field": "raw.calib.x"}},
        "xppcspad.raw.calib is a method; nothing follows it",
    ),
    (
        {"files": "FILE"},
        {"motor1": {"type": "scalar", "source": "xppcspad"}},
        "'xppcspad' is not a scalar (an EPICS PV or scan value)",
    ),
]


@pytest.mark.parametrize("source,override,message", BAD)
def test_psana2_bad_input_is_one_clear_line(tmp_path, xtc2, source, override, message):
    source = {
        k: str(next(xtc2.glob("*.xtc2"))) if v == "FILE" else str(xtc2) if v == "DIR" else v
        for k, v in source.items()
    }
    cfg = _config(source, {"type": "null"})
    cfg["data_sources"].update(override)
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg)), "--no-progress"])
    assert res.code == 1, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_psana2_config_errors_are_located(tmp_path):
    cfg = _config({"files": "x.xtc2", "run": 3}, {"type": "null"})
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg)), "--validate"])
    assert res.code == 2 and "run and directory go with experiment" in res.stderr
    cfg = _config({"files": "x.xtc2"}, {"type": "null"})
    cfg["event_source"] = {"type": "synthetic", "number_of_events": 3, "detectors": {"d": {}}}
    cfg["data_sources"] = {"x": {"type": "detector", "source": "d", "field": "raw.calib"}}
    cfg["data_serializer"]["fields"] = {"x": "/x"}
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg)), "--validate"])
    assert res.code == 2 and "data_sources.x.field" in res.stderr, res.stderr
    assert "field is for the psana2 event source only" in res.stderr


def test_psana2_calibration_on_when_configured_reaches_for_the_database(tmp_path, xtc2):
    """`calibration: true` makes psana load constants from the facility's calibration
    database, which this machine cannot reach: psana's failure is one error line."""
    cfg = _config({"files": str(next(xtc2.glob("*.xtc2"))), "calibration": True}, {"type": "null"})
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", cfg)), "--no-progress"])
    assert res.code == 1 and "Traceback" not in res.stderr
    assert "psana2: cannot open DataSource(" in res.stderr and "calib_ws" in res.stderr
    assert "skip_calib_load" not in res.stderr


def _source(**kw) -> Psana2EventSource:
    return Psana2EventSource(type="psana2", **kw)


def test_psana2_datasource_arguments():
    """Calibration off offline (files or directory), on at the facility, as configured."""
    offline = datasource_kwargs(_source(files="a.xtc2", max_events=9), 4)
    assert offline == {"files": "a.xtc2", "skip_calib_load": "all"}, "files: we cap, not psana"
    facility = datasource_kwargs(_source(experiment="tmox", run=3, live=True), None)
    assert facility == {"exp": "tmox", "run": 3, "live": True}
    in_dir = _source(experiment="tmox", run=3, directory="/d", batch_size=5, max_events=9)
    assert datasource_kwargs(in_dir, 4) == {
        "exp": "tmox",
        "run": 3,
        "dir": "/d",
        "skip_calib_load": "all",
        "batch_size": 5,
        "max_events": 4,
    }
    assert not calibration_wanted(_source(files=["a", "b"]))
    assert calibration_wanted(_source(files="a", calibration=True))
    assert not calibration_wanted(_source(experiment="tmox", run=3, calibration=False))
    assert event_cap(_source(files="a"), None) is None


def test_psana_mapping_values_are_an_error_naming_the_keys():
    """psana's real digitizer returns per-channel dicts for waveforms/peaks: no fixed shape."""
    with pytest.raises(DataError, match=r"psana2 hsd.raw.waveforms gives a mapping \(keys 0, 1\)"):
        as_array({0: [1], 1: [2]}, "psana2", "hsd", "raw.waveforms")
    arr = np.arange(3)
    assert as_array(arr, "psana2", "d", "k") is arr and as_array(None, "psana2", "d", "k") is None
    assert as_array([1, 2], "psana2", "d", "k").tolist() == [1, 2]
