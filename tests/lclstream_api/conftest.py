"""Batches made by the real lclstreamer (`mpirun -n 2`, file handler) for the client's
decoding, pull and cache tests: one set per serializer, made once per session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.suite import pipeline


def source_config(serializer: dict, events: int = 24) -> dict:
    return pipeline(events, shape=(2, 16, 16), serializer=serializer)


SERIALIZERS = {
    "hdf5": {"type": "hdf5", "compression": "bitshuffle_lz4",
             "fields": {"frames": "/data/frames", "index": "/data/index"}},
    "numpy": {"type": "numpy", "compression": "lz4",
              "fields": {"frames": "frames_array", "index": "idx"}},
    "msgpack": {"type": "msgpack", "fields": {"frames": "data", "index": "event"}},
}  # fmt: skip


class Made:
    def __init__(self, config: dict, files: list[Path]) -> None:
        self.config, self.files = config, files


@pytest.fixture(scope="session")
def made(tmp_path_factory):
    """serializer type -> Made(config without handlers, the message files in order)."""
    out = {}
    for kind, ser in SERIALIZERS.items():
        root = tmp_path_factory.mktemp(f"made-{kind}")
        cfg = source_config(ser)
        path = root / "cfg.yaml"
        handlers = [{"type": "file", "directory": str(root / "out"), "prefix": "b"}]
        path.write_text(yaml.safe_dump({**cfg, "data_handlers": handlers}))
        subprocess.run(["mpirun", "-n", "2", "lclstreamer", "-c", str(path), "--no-progress"],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        out[kind] = Made(cfg, sorted((root / "out").iterdir()))
    return out
