"""lclstreamer test helpers: run the CLI (under mpirun or alone), write configs, read output."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (bitshuffle filters for reading)
import yaml

BIN = Path(sys.executable).parent
LCLSTREAMER = str(BIN / "lclstreamer")
MPIRUN = str(BIN / "mpirun")
EXAMPLES = Path(__file__).resolve().parents[2] / "lclstreamer" / "examples"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def summary(self) -> dict[str, Any]:
        """The JSON summary rank 0 prints as its last stdout line (MPI libraries may print
        warnings after it at exit, e.g. UCX under psana2's MPI mode)."""
        import json

        lines = [line for line in self.stdout.splitlines() if line.startswith('{"events"')]
        return json.loads(lines[-1])


def run_cli(
    args: list[str],
    ranks: int | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    """Run `lclstreamer ARGS` (under `mpirun -n ranks` if given); kill the group on timeout."""
    cmd = [LCLSTREAMER, *args]
    if ranks is not None:
        cmd = [MPIRUN, "-n", str(ranks), *cmd]
    full_env = {**os.environ, **(env or {})}
    full_env.pop("LCLSTREAMER_MPI", None)
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"{cmd} did not finish in {timeout} s\nstdout:\n{out}\nstderr:\n{err}"
        ) from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return Result(proc.returncode, out, err)


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def synthetic_config(
    out: Path,
    n: int = 20,
    batch: int = 4,
    compression: str = "none",
    shape=(2, 16, 24),
    **source: Any,
) -> dict[str, Any]:
    """A small synthetic -> hdf5 -> file configuration."""
    return {
        "source_identifier": "test:synthetic",
        "event_source": {
            "type": "synthetic",
            "number_of_events": n,
            "seed": 3,
            "detectors": {"det": {"shape": list(shape), "peaks": 3}},
            **source,
        },
        "data_sources": {
            "frames": {"type": "detector", "source": "det"},
            "index": {"type": "event_index"},
            "timestamp": {"type": "timestamp"},
            "wavelength": {"type": "wavelength"},
            "codes": {"type": "event_codes"},
            "ident": {"type": "source_identifier"},
        },
        "processing_pipeline": {"type": "batch", "batch_size": batch},
        "data_serializer": {
            "type": "hdf5",
            "compression": compression,
            "fields": {
                "frames": "/entry_1/data_1/data",
                "index": "/entry_1/event_index",
                "timestamp": "/LCLS/timestamp",
                "wavelength": "/LCLS/wavelength",
                "codes": "/LCLS/event_codes",
                "ident": "/LCLS/source",
            },
        },
        "data_handlers": [{"type": "file", "directory": str(out), "prefix": "t"}],
    }


def read_message(data: bytes | Path) -> dict[str, Any]:
    """Root attributes and every dataset (as arrays) of one HDF5 message or file."""
    import io

    src = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    out: dict[str, Any] = {}
    with h5py.File(src, "r") as f:
        out["attrs"] = dict(f.attrs)
        out["filters"] = {}

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                out["/" + name] = obj[()]
                plist = obj.id.get_create_plist()
                ids = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
                out["filters"]["/" + name] = (obj.chunks, ids)

        f.visititems(visit)
    return out
