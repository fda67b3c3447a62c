"""Job folders on disk: `<prefix>/<jobid>/{spec.json, status.csv, work/, log/}`.

Every state change is one appended row of status.csv, checked by the state machine and
written while holding an exclusive flock on that file, so concurrent writers (the
submitter, the job's wrapper, a canceller) never interleave or write an illegal row.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from .errors import IllegalTransition, JobNotFound
from .models import Config, JobSpec, JobState, Transition
from .states import check_transition

JOBID = re.compile(r"^[0-9]{1,24}$")
HEADER = "time,jobndx,state,info\n"
STREAMS = ("stdout", "stderr")
#: rows of status.csv whose callbacks were handled (see psik.outbox).
CURSOR = "callbacks.cursor"
#: one line `<jobid>` per change under a prefix, so an index can catch up (psik.index).
JOURNAL = ".journal"


def _now() -> datetime:
    return datetime.now(UTC)


def parse_status(text: str) -> list[Transition]:
    """Parse status.csv text (header optional) into transitions."""
    rows = []
    for fields in csv.reader(io.StringIO(text)):
        if not fields or fields == ["time", "jobndx", "state", "info"]:
            continue
        stamp, ndx, state, info = (fields + [""])[:4]
        rows.append(
            Transition(
                time=datetime.fromisoformat(stamp),
                jobndx=int(ndx),
                state=JobState(state),
                info=info,
            )
        )
    return rows


def format_row(tr: Transition) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        [tr.time.isoformat(), tr.jobndx, tr.state.value, tr.info]
    )
    return buf.getvalue()


class JobDir:
    """One job's folder. Cheap to construct; reads happen on demand."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)

    @property
    def jobid(self) -> str:
        return self.base.name

    @property
    def spec_path(self) -> Path:
        return self.base / "spec.json"

    @property
    def status_path(self) -> Path:
        return self.base / "status.csv"

    @property
    def config_path(self) -> Path:
        return self.base / "config.json"

    @property
    def log_dir(self) -> Path:
        return self.base / "log"

    @property
    def console(self) -> Path:
        return self.log_dir / "console"

    def log_path(self, stream: str, jobndx: int) -> Path:
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {', '.join(STREAMS)}, not {stream!r}")
        return self.log_dir / f"{stream}.{jobndx}"

    def exists(self) -> bool:
        return self.status_path.is_file() and self.spec_path.is_file()

    def spec(self) -> JobSpec:
        return JobSpec.model_validate_json(self.spec_path.read_bytes())

    def config(self) -> Config:
        """The configuration the job was created with (written at creation)."""
        return Config.model_validate_json(self.config_path.read_bytes())

    def owner(self) -> str | None:
        path = self.base / "owner"
        return path.read_text().strip() if path.is_file() else None

    def delegated_by(self) -> str | None:
        """The service identity that submitted this job on its owner's behalf, if any."""
        path = self.base / "delegated_by"
        return path.read_text().strip() if path.is_file() else None

    def workdir(self, spec: JobSpec | None = None) -> Path:
        """The job's working directory: spec.directory (relative to work/) or work/."""
        spec = spec or self.spec()
        work = self.base / "work"
        if spec.directory is None:
            return work
        return (work / Path(spec.directory)).resolve()

    @property
    def files_root(self) -> Path:
        """The folder the files API serves: always the job's own work/, whatever
        `directory` says (an absolute working directory is not exposed)."""
        return self.base / "work"

    def transitions(self) -> list[Transition]:
        return parse_status(self.status_path.read_text())

    def current(self) -> Transition:
        rows = self.transitions()
        if not rows:
            raise JobNotFound(f"job {self.jobid} has an empty status file")
        return rows[-1]

    @contextmanager
    def _locked(self) -> Iterator[io.TextIOWrapper]:
        with open(self.status_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def record(self, jobndx: int, state: JobState, info: str = "") -> Transition:
        """Append (jobndx, state, info) if the state machine allows it, else raise.

        A rejected transition is noted in log/console and never written to status.csv.
        """
        with self._locked() as fh:
            fh.seek(0)
            rows = parse_status(fh.read())
            current = (rows[-1].jobndx, rows[-1].state) if rows else None
            try:
                check_transition(current, jobndx, state)
            except IllegalTransition as exc:
                self.note(f"rejected ({jobndx}, {state.value}, {info!r}): {exc}")
                raise IllegalTransition(f"job {self.jobid}: {exc}") from None
            tr = Transition(time=_now(), jobndx=jobndx, state=state, info=info)
            fh.seek(0, os.SEEK_END)
            fh.write(format_row(tr))
            fh.flush()
        journal(self.base.parent, self.jobid)
        return tr

    def note(self, message: str) -> None:
        """Append a timestamped line to log/console."""
        self.log_dir.mkdir(exist_ok=True)
        with open(self.console, "a") as fh:
            fh.write(f"{_now().isoformat()} psik: {message}\n")


class JobStore:
    """All job folders under one prefix."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = Path(prefix).expanduser()

    def _new_base(self) -> Path:
        """Make a fresh job folder; mkdir is atomic, so concurrent creators never collide."""
        self.prefix.mkdir(parents=True, exist_ok=True)
        candidate = time.time_ns() // 1000
        while True:
            base = self.prefix / str(candidate)
            try:
                base.mkdir()
                return base
            except FileExistsError:
                candidate += 1

    def create(
        self,
        spec: JobSpec,
        config: Config,
        owner: str | None = None,
        delegated_by: str | None = None,
    ) -> JobDir:
        """Write a new job folder in state (1, new) and return it."""
        base = self._new_base()
        job = JobDir(base)
        (base / "work").mkdir()
        job.log_dir.mkdir()
        if owner is not None:
            (base / "owner").write_text(owner + "\n")
        if delegated_by is not None:
            (base / "delegated_by").write_text(delegated_by + "\n")
        _write_atomic(job.config_path, config.model_dump_json(indent=2))
        _write_atomic(job.spec_path, spec.model_dump_json(indent=2))
        with open(job.status_path, "w") as fh:
            fh.write(HEADER)
        _write_atomic(base / CURSOR, "1")  # the `new` row has no callback
        job.record(1, JobState.new)
        return job

    def get(self, jobid: str) -> JobDir:
        if not JOBID.match(jobid):
            raise JobNotFound(f"no job {jobid!r} (job ids are digits)")
        job = JobDir(self.prefix / jobid)
        if not job.exists():
            raise JobNotFound(f"no job {jobid} under {self.prefix}")
        return job

    def list(self) -> list[JobDir]:
        """Every complete job folder, oldest first."""
        if not self.prefix.is_dir():
            return []
        ids = sorted((p.name for p in self.prefix.iterdir() if JOBID.match(p.name)), key=int)
        return [job for job in (JobDir(self.prefix / i) for i in ids) if job.exists()]

    def remove(self, jobid: str) -> None:
        job = self.get(jobid)
        shutil.rmtree(job.base)
        journal(self.prefix, jobid)


def journal(prefix: Path, jobid: str) -> None:
    """Note that job `jobid` changed (one short O_APPEND write: lines never interleave)."""
    fd = os.open(prefix / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{jobid}\n".encode())
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_spec(path: Path) -> JobSpec:
    """Read a JobSpec from a JSON or YAML file, with located errors."""
    from .settings import load_model

    return load_model(JobSpec, path)
