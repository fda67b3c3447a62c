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

from lclstreamer.compat import TABLE, _streaming_handler, native_types
from lclstreamer.config import explain_config, parse_config
from lclstreamer.errors import ConfigError
from lclstreamer.serializers.numpy import decode
from nngstream.models import EndOfStream, decode_control, is_control

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
        ("random-peaknet-numpy.yaml", "synthetic -> 2 fields -> numpy -> file"),
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
            "processing_pipeline.target_height (line 25, column 5): required key is missing",
        ),
        (
            "random-internal.yaml",
            lambda d: (
                d["processing_pipeline"].update(_PEAKNET),
                d["data_sources"]["counts"].update(array_shape="8,8"),
            ),
            "processing_pipeline.type (line 25, column 5): upstream pads every 2-D data source,"
            " the native peaknet pipeline one: add `field: <data source>` (image sources here:"
            " random, counts)",
        ),
        (
            "random-internal.yaml",
            lambda d: d["data_handlers"][0].update(
                type="BinaryDataStreamingDataHandler", urls=["tcp://127.0.0.1:5"], buffer=4096
            ),
            "data_handlers[0].buffer (line 1, column 1): buffer 4096: only 0 (the OS default)",
        ),
        (
            "random-internal.yaml",
            lambda d: d["data_handlers"][0].update(
                type="BinaryDataStreamingDataHandler",
                urls=["tcp://127.0.0.1:5", "tcp://127.0.0.1:6"],
                library="zmq",
                socket_type="rep",
            ),
            "data_handlers[0].urls (line 1, column 1): socket_type rep takes exactly one url",
        ),
        (
            "psana2-older.yaml",
            lambda d: d["lclstreamer"].update(source_identifier="exp=mfx1,run=7,drp=a"),
            "lclstreamer.source_identifier (line 4, column 5): drp= has no equivalent",
        ),
        (
            "psana2-older.yaml",
            lambda d: d["lclstreamer"].update(source_identifier="exp=mfx1,files=a.xtc2"),
            "lclstreamer.source_identifier (line 4, column 5): give files= or exp= and run=",
        ),
        (
            "psana2-older.yaml",
            lambda d: d["data_sources"].update(
                motor={"type": "Psana2DetectorInterface", "psana_name": "motor1"}
            ),
            "data_sources.motor.psana_fields (line 1, column 1): psana_fields is needed: "
            "'motor1' is not an EPICS PV",
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


_PEAKNET = {
    "type": "PeaknetPreprocessingPipeline",
    "batch_size": 8,
    "target_height": 16,
    "target_width": 12,
}
_SIMPLON = {
    "type": "SimplonBinarySerializer",
    "data_source_to_serialize": "random",
    "polarization_fraction": 0.99,
    "polarization_axis": [1.0, 0.0, 0.0],
    "data_collection_rate": "120 Hz",
    "detector_name": "jungfrau",
    "detector_type": "Jungfrau4M",
}


def _iface(name: str, fields=None, **extra) -> dict:
    """An upstream Psana2DetectorInterface data source."""
    out = {"type": "Psana2DetectorInterface", "psana_name": name, **extra}
    return out if fields is None else {**out, "psana_fields": fields}


_PSANA2 = {
    "source_identifier": "files=/d/r14.xtc2,max_events=25,batch_size=5",
    "skip_incomplete_events": True,
    "event_source": {"type": "Psana2EventSource"},
    "data_sources": {
        "calib": _iface("cs", "raw.calib"),
        "fex": _iface("hsd", "fex.arrayFex"),
        "both": _iface("hsd", ["raw.array0Pgp", "raw.array1Pgp"], dtype="float32"),
        "raw1": {**_iface("cs", "raw"), "type": "Psana1DetectorInterface"},
        "pv": _iface("HX2:DVD:GCC:01:PMON"),
        "timestamp": {"type": "Psana2Timestamp"},
        "run": {"type": "Psana2RunInfo"},
    },
    "processing_pipeline": {"type": "BatchProcessingPipeline", "batch_size": 4},
    "data_serializer": {"type": "MsgpackBinarySerializer"},
    "data_handlers": [{"type": "BinaryFileWritingDataHandler"}],
}  # fmt: skip


def _native(name: str, change) -> tuple:
    return explain_config(_edit(name, change), "up.yaml")


def test_psana2_names_map_with_the_same_meaning():
    """source_identifier keys; psana_fields as kind or dotted field (list: stacked); dtype
    float64 unless given (as upstream); a PV name without fields is a scalar."""
    cfg, notes = explain_config(yaml.safe_dump(_PSANA2), "up.yaml")
    src = cfg.event_source
    assert (src.type, src.files, src.max_events, src.batch_size) == ("psana2", "/d/r14.xtc2", 25, 5)
    assert (src.experiment, src.run, src.directory) == (None, None, None)
    ds = cfg.data_sources
    keys = ("source", "kind", "field", "dtype")
    got = {n: (d.type, *(getattr(d, k, None) for k in keys)) for n, d in ds.items()}
    assert got == {
        "calib": ("detector", "cs", "calib", None, "float64"),
        "fex": ("detector", "hsd", "calib", "fex.arrayFex", "float64"),
        "both": ("detector", "hsd", "calib", ["raw.array0Pgp", "raw.array1Pgp"], "float32"),
        "raw1": ("detector", "cs", "raw", None, None),
        "pv": ("scalar", "HX2:DVD:GCC:01:PMON", None, None, "float64"),
        "timestamp": ("timestamp", None, None, None, None),
        "run": ("run_info", None, None, None, None),
    }
    assert ds["run"].key == "run"
    assert any("data_sources.run: one value per event" in n and "four strings" in n for n in notes)
    for ident, want in [
        ("exp=tmox1,run=3,dir=/d", ("tmox1", 3, "/d", None)),
        ({"exp": "tmox1", "run": 4}, ("tmox1", 4, None, None)),
    ]:
        cfg, _ = explain_config(yaml.safe_dump({**_PSANA2, "source_identifier": ident}), "u.yaml")
        src = cfg.event_source
        assert (src.experiment, src.run, src.directory, src.files) == want


def test_pipeline_serializer_and_handler_names_map_onto_native_types():
    cfg, notes = _native("random-internal.yaml", lambda d: d.update(
        processing_pipeline={**_PEAKNET, "pad_style": "bottom-right"},
        data_serializer={"type": "NumpyBinarySerializer", "use_compression": True},
        data_handlers=[
            {"type": "BinaryDataStreamingDataHandler", "urls": ["tcp://*:5000"],
             "library": "zmq", "socket_type": "pub", "role": "server", "distribute": False},
            {"type": "BinaryDataStreamingDataHandler", "urls": ["tcp://127.0.0.1:5002"],
             "library": "zmq", "socket_type": "rep", "linger": 2500, "role": "server"},
            {"type": "BinaryDataStreamingDataHandler", "urls": ["tcp://127.0.0.1:5004"],
             "library": "zmq", "role": "client"},
            {"type": "BinaryDataStreamingDataHandler", "urls": ["tcp://127.0.0.1:5006"],
             "distribute": True, "buffer": 0},
            {"type": "BinaryDataStreamingDataHandler", "urls": ["tcp://127.0.0.1:5008"]},
        ],
    ))  # fmt: skip
    pipe = cfg.processing_pipeline
    assert (pipe.type, pipe.field, pipe.batch_size, pipe.target_height, pipe.target_width) == (
        "peaknet", "random", 8, 16, 12)  # fmt: skip
    assert (pipe.pad_style, pipe.add_channel_dim, pipe.num_channels) == ("bottom_right", True, 1)
    ser = cfg.data_serializer
    assert (ser.type, ser.compression) == ("numpy", "zstd")
    assert ser.fields == {"random": "random", "counts": "counts", "int": "int", "float": "float"}
    pub, rep, push, current, older = cfg.data_handlers
    assert (pub.type, pub.urls, pub.mode, pub.distribute) == (
        "zmq_pub", ["tcp://0.0.0.0:5000"], "listen", False)  # fmt: skip
    assert (rep.type, rep.url, rep.linger) == ("zmq_rep", "tcp://127.0.0.1:5002", 2.5)
    assert (push.type, push.mode) == ("zmq_push", "dial")
    assert (current.type, current.mode, current.distribute) == ("zmq_push", "dial", True)
    assert (older.type, older.mode) == ("nng_push", "listen"), "older upstream defaults"
    assert any("pads data source 'random'" in n for n in notes)
    assert any("not upstream's .npz" in n for n in notes)

    cfg, notes = _native("random-internal.yaml", lambda d: d.update(
        data_serializer={"type": "MsgpackBinarySerializer"}))  # fmt: skip
    assert cfg.data_serializer.type == "msgpack"
    assert cfg.data_serializer.fields == {k: k for k in ("random", "counts", "int", "float")}
    cfg, notes = _native("random-internal.yaml", lambda d: d.update(data_serializer=_SIMPLON))
    ser = cfg.data_serializer
    assert (ser.type, ser.image, ser.detector_description) == (
        "simplon", "random", "Jungfrau4M jungfrau")  # fmt: skip
    assert ser.start_user_data == {
        "polarization_fraction": 0.99,
        "polarization_axis": [1.0, 0.0, 0.0],
        "data_collection_rate": "120 Hz",
    }
    assert any("in the start message's user_data" in n for n in notes)


def test_every_upstream_name_maps_onto_a_native_type_of_this_build():
    for section, names in TABLE.items():
        for name, entry in names.items():
            if section != "data_handlers" or entry.convert is not _streaming_handler:
                assert entry.native in native_types(section), (section, name, entry.native)


def test_upstream_peaknet_numpy_config_runs(tmp_path):
    """Upstream PeakNet preprocessing + numpy serializer: every image padded (centre), with
    a channel axis (upstream's default), exact; zstd (upstream's use_compression)."""
    (tmp_path / "cfg.yaml").write_text((UPSTREAM / "random-peaknet-numpy.yaml").read_text())
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], cwd=tmp_path)
    assert res.code == 0, res.stderr
    msgs = [decode(p.read_bytes()) for p in sorted((tmp_path / "out").glob("pk*.npmsg"))]
    assert [m["header"]["n_events"] for m in msgs] == [4, 4, 2]
    for m in msgs:
        assert m["header"]["compression"] == "zstd"
        first, n = m["header"]["first_event"], m["header"]["n_events"]
        want = np.zeros((n, 1, 16, 14), np.float32)
        for k in range(n):
            rnd = np.random.default_rng([0, first + k]).random((12, 10), dtype=np.float32)
            want[k, 0, 2:14, 2:12] = rnd
        np.testing.assert_array_equal(m["detector_data"], want)
        assert {a["name"] for a in m["header"]["arrays"]} == {"detector_data", "timestamp"}
        assert m["timestamp"].dtype == np.uint64 and m["timestamp"].shape == (n,)


def test_upstream_msgpack_config_runs(tmp_path):
    """Upstream's MsgpackBinarySerializer: every data source under its own name, one map
    per event, read back with msgpack alone (arrays as {type, shape, data})."""
    import msgpack

    text = _edit(
        "random-internal.yaml",
        lambda d: d.update(data_serializer={"type": "MsgpackBinarySerializer"}),
    )
    (tmp_path / "cfg.yaml").write_text(text)
    res = run_cli(["-c", "cfg.yaml", "--no-progress"], cwd=tmp_path)
    assert res.code == 0, res.stderr
    maps = [msgpack.unpackb(p.read_bytes()) for p in sorted((tmp_path / "out").glob("rnd*"))]
    assert len(maps) == 30
    for event, m in enumerate(maps):  # one rank: files in event order
        assert set(m) == {"random", "counts", "int", "float"}
        rnd = m["random"]
        assert (rnd["type"], rnd["shape"]) == ("<f4", [6, 3])
        want = np.random.default_rng([0, event]).random((6, 3), dtype=np.float32)
        np.testing.assert_array_equal(np.frombuffer(rnd["data"], "<f4").reshape(6, 3), want)
        assert (m["int"], m["float"]) == (7, 2.25)


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
    """Pulls from the buffer's OUT address until the buffer's end message."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.messages = url, []
        self.end: EndOfStream | None = None
        self.connected, self._live = threading.Event(), set()

    def run(self) -> None:
        with pynng.Pull0(recv_max_size=0, recv_timeout=200) as sock:
            sock.add_post_pipe_connect_cb(lambda p: (self._live.add(p.id), self.connected.set()))
            sock.add_post_pipe_remove_cb(lambda p: self._live.discard(p.id))
            sock.dial(self.url, block=False)
            while True:
                try:
                    data = sock.recv()
                except pynng.Timeout:
                    if self.connected.is_set() and not self._live:
                        return  # the buffer went away without an end message
                    continue
                if is_control(data):
                    self.end = decode_control(data)
                    return
                self.messages.append(read_message(data))


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
    assert not consumer.is_alive() and consumer.end is not None, "no end message"
    assert consumer.end.recvd == len(consumer.messages)
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
