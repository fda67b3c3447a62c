"""In-process tests of the pure parts: config errors, partitioning, batching, extraction,
the in-memory file, the registry, the synthetic source and the docs reference."""

from __future__ import annotations

import io
import subprocess
import sys
import typing
from pathlib import Path

import h5py
import numpy as np
import pytest

from lclstreamer import models as m
from lclstreamer.config import data_path, load_config, parse_config
from lclstreamer.docgen import BEGIN, END, reference
from lclstreamer.engine import extract
from lclstreamer.errors import ConfigError, DataError, SourceError
from lclstreamer.handlers.tcpqueue import parse_endpoint, parse_proc_net_tcp
from lclstreamer.memfile import MemoryFile
from lclstreamer.partition import blocks, limit, owner, rank_indices
from lclstreamer.pipeline import BatchPipeline
from lclstreamer.protocols import Event, StreamContext
from lclstreamer.registry import LAYERS
from lclstreamer.sources.hdf5 import expand_files
from lclstreamer.sources.synthetic import SyntheticSource
from lclstreamer.stats import RankStats, summarize

from .helpers import EXAMPLES

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    return str(info.value)


MINIMAL = """\
event_source:
  type: synthetic
  number_of_events: 4
data_sources:
  f: {type: detector, source: epix10k2M}
data_serializer:
  type: hdf5
  fields: {f: /f}
data_handlers:
  - type: null
"""


def test_minimal_config_and_yaml_null_handler():
    cfg = parse_config(MINIMAL)
    assert cfg.data_handlers[0].type == "null"  # YAML `null` reads as None
    assert cfg.processing_pipeline.batch_size == 10


def test_errors_are_located_and_readable():
    text = MINIMAL.replace("number_of_events: 4", "number_of_events: -1\n  colour: red")
    err = _error(text)
    assert err.splitlines()[0] == "cfg.yaml: invalid configuration (2 problems)"
    assert "  event_source.number_of_events (line 3, column 3): Input should be greater" in err
    assert "  event_source.colour (line 4, column 3): unknown key" in err
    err = _error(MINIMAL.replace("type: hdf5", "type: json"))
    assert "data_serializer.type (line 7, column 3): unknown type 'json'; valid types: hdf5" in err
    err = _error(MINIMAL.replace("source: epix10k2M", "source: cspad"))
    assert "data_sources.f.source (line 5" in err and "provides: epix10k2M" in err
    assert "missing 'type'" in _error(MINIMAL.replace("  - type: null", "  - {}"))
    assert "compression 'none' takes no compression_level" in _error(
        MINIMAL.replace("fields: {f: /f}", "fields: {f: /f}\n  compression_level: 3")
    )
    assert "must be an absolute HDF5 path" in _error(MINIMAL.replace("{f: /f}", "{f: f}"))
    assert "needs host:port" in _error(
        MINIMAL.replace("type: null", "{type: nng_push, urls: ['tcp://h']}")[:-1]
    )
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/cfg.yaml")


def test_data_path_drops_discriminator_tags():
    data = {"event_source": {"type": "hdf5", "files": "x"}, "data_handlers": [{"type": "file"}]}
    assert data_path(("event_source", "hdf5", "datasets"), data) == ("event_source", "datasets")
    assert data_path(("data_handlers", 0, "file", "prefix"), data) == ("data_handlers", 0, "prefix")


def test_examples_are_valid():
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert {p.name for p in examples} >= {
        "synthetic-to-files.yaml",
        "synthetic-to-nng.yaml",
        "hdf5-to-nng.yaml",
        "peaknet-training.yaml",
        "tmo-tof.yaml",
        "sfx-crystfel.yaml",
        "sfx-simplon.yaml",
    }
    for path in examples:
        assert isinstance(load_config(path), m.LclstreamerConfig)


def test_models_import_without_mpi_and_schema_lists_types():
    code = (
        "import sys, json, lclstreamer.models as m, lclstreamer.config, lclstreamer.registry;"
        "s = json.dumps(m.json_schema()); assert 'mpi4py' not in sys.modules, 'mpi4py';"
        "print('bitshuffle_zstd' in s and 'nng_push' in s and 'psana2' in s)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


def test_registry_covers_every_type():
    def tags(union):
        inner = typing.get_args(union)[0]
        members = typing.get_args(inner) or (inner,)
        return {typing.get_args(t.model_fields["type"].annotation)[0] for t in members}

    assert tags(m.EventSourceConfig) == set(LAYERS["event_source"])
    assert tags(m.DataSourceConfig) == set(LAYERS["data_sources"])
    assert tags(m.ProcessingPipelineConfig) == set(LAYERS["processing_pipeline"])
    assert tags(m.SerializerConfig) == set(LAYERS["data_serializer"])
    assert tags(m.DataHandlerConfig) == set(LAYERS["data_handlers"])


def test_partition_is_deterministic_and_complete():
    for size in (1, 2, 3, 7):
        parts = [list(rank_indices(20, r, size)) for r in range(size)]
        assert sorted(i for p in parts for i in p) == list(range(20))
        assert all(owner(i, size) == r for r, p in enumerate(parts) for i in p)
    assert limit(10, None) == 10 and limit(10, 3) == 3 and limit(2, 5) == 2
    assert [list(b) for b in blocks(range(1, 12, 2), 4)] == [[1, 3, 5, 7], [9, 11]]
    with pytest.raises(ValueError):
        rank_indices(5, 2, 2)


def _events(shapes, dtype=np.float32):
    return [
        Event(i, {"a": np.full(s, i, dtype), "s": float(i), "t": "x"}) for i, s in enumerate(shapes)
    ]


def test_batch_pipeline_stacks_flushes_and_reuses():
    pipe = BatchPipeline(m.BatchPipeline(type="batch", batch_size=3), None)
    events = _events([(2, 2)] * 7)
    out = []
    buffers = set()
    for b in pipe(iter(events)):
        rows = b.columns["a"].rows
        assert all(r is events[b.first_event + i].data["a"] for i, r in enumerate(rows))  # no copy
        stacked = b.array("a")
        buffers.add(stacked.base.__array_interface__["data"][0] if stacked.base is not None else 0)
        out.append(
            (
                b.seq,
                b.first_event,
                b.n_events,
                stacked[:, 0, 0].tolist(),
                b.array("s").tolist(),
                b.array("t").tolist(),
            )
        )
    assert out == [
        (0, 0, 3, [0, 1, 2], [0.0, 1.0, 2.0], ["x"] * 3),
        (1, 3, 3, [3, 4, 5], [3.0, 4.0, 5.0], ["x"] * 3),
        (2, 6, 1, [6], [6.0], ["x"]),
    ]
    assert len(buffers) == 1  # one stacking buffer, allocated once and reused


def test_batch_pipeline_rejects_shape_and_dtype_changes():
    pipe = BatchPipeline(m.BatchPipeline(type="batch", batch_size=4), None)
    with pytest.raises(DataError, match=r"'a' changed in event 2: it is float32 \(3, 2\) but was"):
        list(pipe(iter(_events([(2, 2), (2, 2), (3, 2)]))))
    bad = _events([(2, 2), (2, 2)])
    bad[1].data["a"] = bad[1].data["a"].astype(np.complex64)
    with pytest.raises(DataError, match="complex64"):
        list(pipe(iter(bad)))
    ok = _events([(2, 2), (2, 2)])
    ok[1].data["a"] = ok[1].data["a"].astype(np.int16)  # safe cast into float32 is fine
    assert next(pipe(iter(ok))).n_events == 2


def test_extract_skips_and_counts_or_fails():
    class Raw:
        def __init__(self, i):
            self.index = i

    sources = {"v": lambda e: None if e.index % 3 == 0 else e.index, "w": lambda e: 1}
    stats = RankStats()
    got = [e.index for e in extract(iter(map(Raw, range(10))), sources, True, stats)]
    assert got == [1, 2, 4, 5, 7, 8] and stats.skipped == 4
    with pytest.raises(DataError, match="event 0 has no value for data source 'v'"):
        list(extract(iter(map(Raw, range(3))), sources, False, RankStats()))


def test_memory_file_holds_a_readable_hdf5_image_and_is_reused():
    mf = MemoryFile(capacity=16)
    for n in (5, 3):
        mf.reset()
        with h5py.File(mf, "w") as f:
            f["x"] = np.arange(n * 1000)
        image = bytes(mf.view())
        with h5py.File(io.BytesIO(image), "r") as f:
            assert f["x"][-1] == n * 1000 - 1
    view = mf.view()  # a live view must not block growth
    mf.seek(0, io.SEEK_END)
    mf.write(b"\0" * (mf.capacity + 10))
    assert len(view) > 0 and mf.view().nbytes > mf.capacity // 2


def test_proc_net_tcp_parsing():
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        "   0: 0100007F:1F90 0100007F:C350 01 0000A000:00000000 00:00000000 00000000\n"
    )
    assert parse_proc_net_tcp(text) == {(("127.0.0.1", 8080), ("127.0.0.1", 50000)): 0xA000}
    assert parse_endpoint("[::1]:80") == ("::1", 80) and parse_endpoint("/tmp/sock") is None


@pytest.mark.parametrize("pool", [0, 4])
def test_synthetic_frames_do_not_depend_on_rank_count(pool):
    cfg = m.SyntheticEventSource(
        type="synthetic",
        number_of_events=9,
        pool_size=pool,
        detectors={"d": m.SyntheticDetector(shape=[4, 8, 8], peaks=2)},
    )
    solo = {
        e.index: e.detector("d", "calib").copy()
        for e in SyntheticSource(cfg, StreamContext(0, 1, "")).events()
    }
    for rank in range(3):
        src = SyntheticSource(cfg, StreamContext(rank, 3, ""))
        if pool:  # rank r shows events r, r+3, r+6: pool frames {r, r+3, r+6} % 4
            assert {k for _, k in src._pool} == {i % 4 for i in range(rank, 9, 3)}
        for e in src.events():
            assert e.index % 3 == rank
            assert np.array_equal(e.detector("d", "calib"), solo[e.index])
    assert not np.array_equal(solo[0], solo[1])
    assert np.array_equal(solo[1], solo[5]) == bool(pool)
    assert solo[0].max() > 50  # peaks stand out of the background


def test_summary_and_missing_files(tmp_path):
    s = summarize([RankStats(10, 1, 2, 4_000_000, 2.0, 1.5), RankStats(6, 0, 1, 1_000_000, 1.0)])
    assert s == {
        "events": 16,
        "skipped": 1,
        "batches": 3,
        "bytes": 5_000_000,
        "seconds": 2.0,
        "events/s": 8.0,
        "MB/s": 2.5,
        "ranks": 2,
        "cpu_seconds": 1.5,
    }
    with pytest.raises(SourceError, match="no file exists for"):
        expand_files(str(tmp_path / "a.h5"))


def test_docs_reference_matches_models():
    doc = (ROOT / "docs" / "lclstreamer.md").read_text()
    start, end = doc.index(BEGIN), doc.index(END) + len(END)
    assert doc[start:end] + "\n" == reference(), "run python -m lclstreamer.docgen"


def test_hdf5_source_partitions_across_files_and_marks_missing_datasets(tmp_path):
    from lclstreamer.sources.hdf5 import HDF5Source

    for k, (rows, with_energy) in enumerate([(5, True), (4, False), (6, True)]):
        with h5py.File(tmp_path / f"f{k}.h5", "w") as f:
            start = [0, 5, 9][k]
            f["/d"] = np.arange(start, start + rows)[:, None] * np.ones((rows, 3))
            if with_energy:
                f["/e"] = np.full(rows, 9000.0)
    cfg = m.HDF5EventSource(
        type="hdf5",
        files=str(tmp_path / "f*.h5"),
        datasets={"d": "/d"},
        photon_energy_ev="/e",
        read_block=2,
    )
    seen = {}
    for rank in range(3):
        src = HDF5Source(cfg, StreamContext(rank, 3, "", max_events=14))
        for e in src.events():
            assert e.index % 3 == rank and e.detector("d", "calib")[0] == e.index
            seen[e.index] = e.photon_energy_ev()
        src.close()
    assert sorted(seen) == list(range(14))
    assert sorted(i for i, energy in seen.items() if energy is None) == [5, 6, 7, 8]
    with pytest.raises(SourceError, match="no file has dataset /nope"):
        HDF5Source(cfg.model_copy(update={"datasets": {"x": "/nope"}}), StreamContext(0, 1, ""))


def test_schema_command():
    import json

    from .helpers import run_cli

    full = run_cli(["schema"])
    request = run_cli(["schema", "--without-handlers"])
    assert full.code == 0 and request.code == 0
    assert "data_handlers" in json.loads(full.stdout)["required"]
    assert "data_handlers" not in json.loads(request.stdout)["properties"]
    assert json.loads(request.stdout)["required"] == [
        "event_source",
        "data_sources",
        "data_serializer",
    ]


@pytest.mark.parametrize(
    "compression, level, filters, chunks",
    [
        ("none", None, [], None),  # uncompressed arrays are contiguous
        ("gzip", 7, [1], (1, 2, 3)),  # compressed: one chunk per event
        ("gzip_with_shuffle", None, [2, 1], (1, 2, 3)),
        ("bitshuffle_lz4", None, [32008], (1, 2, 3)),
        ("bitshuffle_zstd", 5, [32008], (1, 2, 3)),
    ],
)
def test_hdf5_serializer_round_trip(compression, level, filters, chunks):
    from lclstreamer.serializers.hdf5 import HDF5Serializer

    from .helpers import read_message

    cfg = m.HDF5Serializer(
        type="hdf5",
        compression=compression,
        compression_level=level,
        fields={"a": "/x/a", "s": "/s", "t": "/t"},
    )
    ctx = StreamContext(1, 2, "src-id")
    events = _events([(2, 3)] * 5)
    batches = BatchPipeline(m.BatchPipeline(type="batch", batch_size=3), ctx)(iter(events))
    messages = [bytes(msg) for msg in HDF5Serializer(cfg, ctx, None)(batches)]
    assert len(messages) == 2
    last = read_message(messages[1])
    assert last["attrs"] == {
        "rank": 1,
        "ranks": 2,
        "seq": 1,
        "n_events": 2,
        "first_event": 3,
        "source_identifier": "src-id",
    }
    assert last["/x/a"].shape == (2, 2, 3) and last["/x/a"][:, 0, 0].tolist() == [3.0, 4.0]
    assert last["filters"]["/x/a"] == (chunks, filters)
    assert last["/s"].tolist() == [3.0, 4.0] and last["filters"]["/s"][1] == []
    assert [v.decode() for v in last["/t"]] == ["x", "x"]
