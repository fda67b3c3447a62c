"""Render an sbatch script from a JobSpec and a BackendConfig (pure: no I/O)."""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence

from .models import BackendConfig, JobSpec

_PLAIN = re.compile(r"^[A-Za-z0-9_.,:/=+@%-]*$")


def _value(text: str) -> str:
    """Quote an option value for an #SBATCH line when it is not a plain word."""
    if _PLAIN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sbatch_options(spec: JobSpec, backend: BackendConfig) -> list[tuple[str, str | None]]:
    """The (option, value) pairs for a run; value None means a bare flag."""
    res = spec.resources
    operator = dict(backend.attributes)
    # The job's own attributes come first: for a repeated option sbatch keeps the last
    # value, so psik's and the operator's settings below always win.
    opts: list[tuple[str, str | None]] = [
        (k, v) for k, v in spec.attributes.items() if k not in operator
    ]
    opts += [
        ("job-name", spec.name),
        ("time", str(max(1, math.ceil(res.duration)))),
    ]
    if res.node_count is not None:  # unset: SLURM chooses, as upstream psik leaves it
        opts.append(("nodes", str(res.node_count)))
    opts.append(("ntasks", str(res.process_count)))  # always set: derived when not given
    if res.processes_per_node is not None:
        opts.append(("ntasks-per-node", str(res.processes_per_node)))
    opts.append(("cpus-per-task", str(res.cpu_cores_per_process)))
    if res.gpu_cores_per_process:
        opts.append(("gpus-per-task", str(res.gpu_cores_per_process)))
    if res.exclusive_node_use:
        opts.append(("exclusive", None))
    if backend.queue_name:
        opts.append(("partition", backend.queue_name))
    if backend.project_name:
        opts.append(("account", backend.project_name))
    if backend.reservation_id:
        opts.append(("reservation", backend.reservation_id))
    opts.extend(operator.items())
    return opts


def render_sbatch(
    spec: JobSpec,
    backend: BackendConfig,
    command: Sequence[str],
    console: str,
    workdir: str,
) -> str:
    """The batch script: #SBATCH header, then exec `command` (the psik wrapper)."""
    lines = ["#!/bin/bash"]
    for key, val in sbatch_options(spec, backend):
        lines.append(f"#SBATCH --{key}" if val is None else f"#SBATCH --{key}={_value(val)}")
    lines += [
        f"#SBATCH --output={_value(console)}",
        "#SBATCH --open-mode=append",
        f"#SBATCH --chdir={_value(workdir)}",
        "#SBATCH --export=ALL",
        "",
        "exec " + shlex.join(command),
        "",
    ]
    return "\n".join(lines)


def parse_sbatch_output(text: str) -> str:
    """The job id from `sbatch --parsable` output (`<id>` or `<id>;<cluster>`)."""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        ident = line.split(";", 1)[0]
        if ident.isdigit():
            return ident
    raise ValueError(f"no job id in sbatch output {text.strip()!r}")
