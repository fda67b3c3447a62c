"""The `psik` command line."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from certified.cliutil import run_typer

from .errors import PsikError
from .jobdir import JobDir, load_spec
from .jobs import Psik, announce
from .models import JobState
from .settings import load_config

app = typer.Typer(
    name="psik",
    help="File-backed batch jobs on local and SLURM backends.",
    no_args_is_help=True,
    add_completion=False,
)


def _psik(ctx: typer.Context) -> Psik:
    return Psik(load_config(ctx.obj))


@app.callback()
def _options(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Config file (else $PSIK_CONFIG, $VIRTUAL_ENV/etc/psik.yaml, /etc/psik.yaml).",
    ),
) -> None:
    ctx.obj = config


@app.command()
def run(
    ctx: typer.Context,
    spec: Path = typer.Argument(..., help="JobSpec file, JSON or YAML."),
    backend: str | None = typer.Option(None, "--backend", "-b", help="Backend name."),
    no_submit: bool = typer.Option(False, "--no-submit", help="Create the job folder only."),
) -> None:
    """Create a job from SPEC and submit it; print its id."""
    job_spec = load_spec(spec)
    if backend is not None:
        job_spec = job_spec.model_copy(update={"backend": backend})
    job = _psik(ctx).run(job_spec, submit=not no_submit)
    typer.echo(job.jobid)


@app.command("ls")
def list_jobs(
    ctx: typer.Context,
    state: JobState | None = typer.Option(None, "--state", "-s", help="Only jobs in this state."),
) -> None:
    """List jobs: id, state, run number, last change, name."""
    for job in _psik(ctx).store.list():
        cur = job.current()
        if state is not None and cur.state is not state:
            continue
        name = job.spec().name
        stamp = cur.time.strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(f"{job.jobid}  {cur.state.value:<9} {cur.jobndx:>3}  {stamp}  {name}")


@app.command()
def status(ctx: typer.Context, jobid: str) -> None:
    """Show a job's spec summary and every transition."""
    job = _psik(ctx).store.get(jobid)
    spec = job.spec()
    typer.echo(f"job {job.jobid}  name={spec.name}  backend={spec.backend}")
    typer.echo(f"base {job.base}")
    for tr in job.transitions():
        typer.echo(f"{tr.time.isoformat()}  {tr.jobndx:>3}  {tr.state.value:<9}  {tr.info}")


@app.command()
def logs(
    ctx: typer.Context,
    jobid: str,
    stream: str = typer.Option("stdout", "--stream", help="stdout or stderr."),
    jobndx: int | None = typer.Option(None, "--jobndx", help="Run number (default: latest)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until it ends."),
) -> None:
    """Print a job's stdout or stderr."""
    job = _psik(ctx).store.get(jobid)
    ndx = jobndx or job.current().jobndx
    try:
        path = job.log_path(stream, ndx)
    except ValueError as exc:
        raise PsikError(str(exc)) from None
    offset = 0
    out = sys.stdout.buffer
    while True:
        done = job.current().state.final or job.current().jobndx != ndx
        if path.is_file():
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
            if data:
                out.write(data)
                out.flush()
                offset += len(data)
        if not follow or done:
            return
        time.sleep(0.2)


@app.command()
def cancel(ctx: typer.Context, jobid: str) -> None:
    """Cancel a queued or running job."""
    psik = _psik(ctx)
    psik.cancel(psik.store.get(jobid))
    typer.echo(f"{jobid} canceled")


@app.command()
def rm(ctx: typer.Context, jobid: str) -> None:
    """Delete a finished (or never submitted) job's folder."""
    psik = _psik(ctx)
    psik.remove(psik.store.get(jobid))
    typer.echo(f"{jobid} removed")


@app.command()
def restart(ctx: typer.Context, jobid: str) -> None:
    """Resubmit a finished job as its next run."""
    psik = _psik(ctx)
    job = psik.store.get(jobid)
    psik.restart(job)
    typer.echo(f"{jobid} queued as run {job.current().jobndx}")


@app.command()
def reached(
    base: Path = typer.Argument(..., help="The job folder ($base in a job)."),
    jobndx: int = typer.Argument(..., help="The run number ($jobndx in a job)."),
    state: JobState = typer.Argument(...),
    info: str = typer.Argument("", help="Free text stored with the transition."),
) -> None:
    """Record that a job reached STATE (used by job scripts); sends its callback."""
    job = JobDir(base.resolve())
    if not job.exists():
        raise PsikError(f"{base}: not a psik job folder")
    announce(job, jobndx, state, info)


def main() -> None:
    run_typer(app, "psik", (PsikError,))


if __name__ == "__main__":
    main()
