"""Upstream lclstreamer configuration files (both layouts) mapped to ours, validated and run.

The files in tests/lclstreamer/upstream/ are written in upstream's two layouts with
upstream's type names (the paper's example config is paper-psana1.yaml)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pynng
import pytest
import yaml

from lclstreamer.config import explain_config, parse_config
from lclstreamer.errors import ConfigError

from .helpers import EXAMPLES, read_message, run_cli, write_config

pytestmark = pytest.mark.timeout(120)

UPSTREAM = Path(__file__).parent / "upstream"
ZFP = 32013


@pytest.mark.parametrize(
    ("name", "summary"),
    [
        ("paper-psana1.yaml", "psana1 -> 2 fields -> hdf5 -> file, nng_push"),
        ("psana1-current.yaml", "psana1 -> 4 fields -> hdf5 -> zmq_push"),
        ("psana2-older.yaml", "psana2 -> 4 fields -> hdf5 -> file"),
        ("random-internal.yaml", "synthetic -> 4 fields -> hdf5 -> file"),
        ("random-to-nng.yaml", "synthetic -> 3 fields -> hdf5 -> nng_push"),
    ],
)
def test_upstream_files_validate(name, summary):
    res = run_cli(["-c", str(UPSTREAM / name), "--validate"])
    assert res.code == 0, res.stderr
    assert res.stdout.strip().endswith(f"valid ({summary})")


def test_paper_config_maps_with_the_same_meaning():
    cfg, notes = explain_config((UPSTREAM / "paper-psana1.yaml").read_text(), "paper.yaml")
    src = cfg.event_source
    assert (src.type, src.experiment, src.run) == ("psana1", "mfxp23120", 91)
    det = cfg.data_sources["detector_data"]
    assert (det.type, det.source, det.kind) == ("detector", "epix10k2M", "calib")
    assert cfg.data_sources["timestamp"].type == "timestamp"
    assert cfg.processing_pipeline.batch_size == 16
    ser = cfg.data_serializer
    assert (ser.compression, ser.zfp_mode, ser.compression_level) == ("zfp", "reversible", None)
    file, push = cfg.data_handlers
    assert (file.type, file.directory, file.prefix) == ("file", "output", "lclstreamer")
    assert (push.type, push.mode, push.urls) == ("nng_push", "dial", ["tcp://127.0.0.1:40123"])
    assert any("compression_level 3 has no effect with zfp" in n for n in notes)


def test_explain_prints_a_native_file_that_validates_to_the_same_config(tmp_path):
    for path in sorted(UPSTREAM.glob("*.yaml")):
        res = run_cli(["-c", str(path), "--validate", "--explain"])
        assert res.code == 0, res.stderr
        native = res.stdout.rsplit("\n", 2)[0]  # the last line is the "valid" summary
        assert native.startswith("# native form of an upstream lclstreamer configuration")
        assert "Psana" not in native.split("\n# note")[-1].split("\n", 1)[1]
        again = parse_config(native, "native.yaml")
        assert again == parse_config(path.read_text(), str(path)), path.name


def test_native_files_are_untouched_by_the_compat_layer():
    native = EXAMPLES / "synthetic-to-files.yaml"
    assert explain_config(native.read_text(), "x.yaml")[1] is None
    res = run_cli(["-c", str(native), "--validate", "--explain"])
    assert res.code == 0 and not res.stdout.startswith("# native form")


def _edit(name: str, change) -> str:
    doc = yaml.safe_load((UPSTREAM / name).read_text())
    change(doc)
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        (
            "random-internal.yaml",
            lambda d: d["processing_pipeline"].update(type="PeaknetPreprocessingPipeline"),
            "processing_pipeline.type (line 25, column 5): upstream type "
            "'PeaknetPreprocessingPipeline' (native 'peaknet') is not supported",
        ),
        (
            "random-internal.yaml",
            lambda d: d["data_sources"]["random"].update(array_shape="6,x"),
            "data_sources.random.array_shape (line 12, column 9): array_shape '6,x' is not",
        ),
        (
            "random-internal.yaml",
            lambda d: d["event_source"].pop("number_of_events_to_generate"),
            "event_source.number_of_events_to_generate (line 3, column 1): required key is missing",
        ),
        (
            "random-internal.yaml",
            lambda d: d["data_handlers"][0].update(write_directory=["a"]),
            "data_handlers[0].write_directory (line 1, column 1): Input should be a valid string",
        ),
        (
            "psana1-current.yaml",
            lambda d: d.update(source_identifier="shmem=psana.0:stop=no"),
            "source_identifier (line 1, column 1): psana shared-memory sources (shmem)",
        ),
        (
            "psana1-current.yaml",
            lambda d: d["data_sources"]["detector_data"].update(psana_fields="raw._pixel_coords"),
            "data_sources.detector_data.psana_fields (line 12, column 9): psana_fields "
            "'raw._pixel_coords' is not supported here",
        ),
        (
            "psana1-current.yaml",
            lambda d: d["data_handlers"][0].update(library="nng", socket_type="pub"),
            "data_handlers[0].socket_type (line 45, column 7): nng socket_type 'pub'",
        ),
        (
            "paper-psana1.yaml",
            lambda d: d["data_serializer"]["Hdf5Serializer"].update(compression="lzf"),
            "data_serializer.Hdf5Serializer.compression (line 21, column 9): compression 'lzf' is "
            "not an upstream choice",
        ),
        (
            "paper-psana1.yaml",
            lambda d: d["lclstreamer"].update(data_serializer="SimplonBinarySerializer"),
            "data_serializer (line 20, column 1): no configuration for 'SimplonBinarySerializer'",
        ),
        (
            "paper-psana1.yaml",
            lambda d: d["data_serializer"]["Hdf5Serializer"]["fields"].update(extra="/x"),
            "data_serializer.Hdf5Serializer.fields.extra (line 25, column 13): 'extra' is not in "
            "data_sources",
        ),
        (
            "psana2-older.yaml",
            lambda d: d["data_handlers"]["BinaryFileWritingDataHandler"].update(mode=1),
            "data_handlers.BinaryFileWritingDataHandler.mode (line 43, column 9): unknown key",
        ),
    ],
)
def test_what_has_no_equivalent_is_a_located_error(name, change, expected):
    text = _edit(name, change)
    with pytest.raises(ConfigError) as err:
        parse_config(text, "up.yaml")
    msg = str(err.value)
    assert msg.startswith("up.yaml: invalid configuration"), msg
    where, _, rest = expected.partition(" (line ")
    line, col = (int(x) for x in re.findall(r"\d+", rest.split(")")[0]))
    assert f"  {where} (line " in msg and rest.split("): ", 1)[1] in msg, msg
    got = re.search(re.escape(where) + r" \(line (\d+), column (\d+)\)", msg)
    assert got, msg
    keys = [k.split("[")[0] for k in where.split(".")]  # a missing key: its section's line
    found = text.splitlines()[int(got[1]) - 1].strip().lstrip("- ")
    assert any(found.startswith(k + ":") for k in keys) or "[" in where, (got[0], found)
    del line, col  # lines are those of the re-dumped text, checked by the key found there


@pytest.mark.mpi
def test_random_array_config_runs_on_two_ranks(tmp_path):
    """Upstream's generated-events file runs unchanged: 30 events, zfp (lossless)."""
    (tmp_path / "cfg.yaml").write_text((UPSTREAM / "random-internal.yaml").read_text())
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], ranks=2, cwd=tmp_path)
    assert res.code == 0, res.stderr
    msgs = [read_message(p) for p in sorted((tmp_path / "out").glob("rnd-*.h5"))]
    assert sum(m["attrs"]["n_events"] for m in msgs) == 30
    firsts = sorted((int(m["attrs"]["rank"]), int(m["attrs"]["first_event"])) for m in msgs)
    assert firsts[:2] == [(0, 0), (0, 8)]
    for m in msgs:
        n = m["attrs"]["n_events"]
        first, rank = int(m["attrs"]["first_event"]), int(m["attrs"]["rank"])
        events = [first + 2 * k for k in range(n)]  # round-robin over 2 ranks
        rnd = m["/data/random"]
        assert rnd.shape == (n, 6, 3) and rnd.dtype == np.float32
        assert rnd.min() >= 0 and rnd.max() < 1
        expect = [np.random.default_rng([0, e]).random((6, 3), dtype=np.float32) for e in events]
        np.testing.assert_array_equal(rnd, np.stack(expect))  # zfp reversible: bit-exact
        counts = m["/data/counts"]
        assert counts.dtype == np.int32 and counts.min() >= 0 and counts.max() <= 254
        assert m["filters"]["/data/random"] == ((1, 6, 3), [ZFP])
        assert m["filters"]["/data/counts"] == ((1, 8), [ZFP])
        assert list(m["/data/int"]) == [7] * n and list(m["/data/float"]) == [2.25] * n
        assert rank in (0, 1)


class _Consumer(threading.Thread):
    """Pulls from the buffer's OUT address until the buffer ends the stream."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.messages = url, []
        self.connected, self._live = threading.Event(), set()

    def run(self) -> None:
        with pynng.Pull0(recv_max_size=0, recv_timeout=200) as sock:
            sock.add_post_pipe_connect_cb(lambda p: (self._live.add(p.id), self.connected.set()))
            sock.add_post_pipe_remove_cb(lambda p: self._live.discard(p.id))
            sock.dial(self.url, block=False)
            while True:
                try:
                    self.messages.append(read_message(sock.recv()))
                except pynng.Timeout:
                    if self.connected.is_set() and not self._live:
                        return


@pytest.mark.mpi
def test_random_array_config_streams_through_nngstream(tmp_path, spawn, free_port):
    """The older-layout upstream file, 2 ranks -> nngstream -> a consumer: every event once."""
    in_url, out_url = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    buffer = spawn(["nngstream", in_url, out_url, "--producers", "2"], name="nngstream")
    for url in (in_url, out_url):
        buffer.wait_port(int(url.rsplit(":", 1)[1]))
    consumer = _Consumer(out_url)
    consumer.start()
    assert consumer.connected.wait(20), "consumer could not connect to the buffer"
    text = _edit(
        "random-to-nng.yaml",
        lambda d: d["data_handlers"]["BinaryDataStreamingDataHandler"].update(urls=[in_url]),
    )
    res = run_cli(["-c", str(write_config(tmp_path / "c.yaml", yaml.safe_load(text))),
                   "--no-progress"], ranks=2)  # fmt: skip
    assert res.code == 0, res.stderr
    assert buffer.wait(60) == 0, buffer.stderr()
    consumer.join(30)
    assert not consumer.is_alive(), "consumer did not see the end of the stream"
    seen = []
    for m in consumer.messages:
        n = m["attrs"]["n_events"]
        assert m["/data/data"].shape == (n, 64, 48) and m["/data/timestamp"].dtype == np.uint64
        assert m["filters"]["/data/data"] == ((1, 64, 48), [ZFP])
        assert np.all((m["/data/wavelength"] > 1.0) & (m["/data/wavelength"] < 1.5))  # angstrom
        first, rank = int(m["attrs"]["first_event"]), int(m["attrs"]["rank"])
        assert first % 2 == rank
        seen += [first + 2 * k for k in range(n)]
    assert sorted(seen) == list(range(40)), "every event exactly once"


def test_explain_needs_validate():
    res = run_cli(["-c", str(UPSTREAM / "paper-psana1.yaml"), "--explain"])
    assert res.code == 2 and "--explain goes with --validate" in res.stderr
