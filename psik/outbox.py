"""Job callbacks delivered in order, from the job folder, by whoever is free to.

The outbox of a job is its status.csv: every row after the cursor (`<base>/callbacks.cursor`,
the number of rows already handled) is a pending callback. `drain` delivers pending rows
in order while holding `<base>/callbacks.lock` (a process that finds it taken leaves its
row to the holder, which looks again after letting go), so the submitter, the wrapper
and psik-api's workers never send one job's callbacks out of order or twice at once.
A callback that cannot be delivered is appended to `<base>/callbacks.failed` (JSON
lines, shown by the API) and noted in log/console; the cursor moves on.

`Dispatcher` runs drains on worker threads behind a bounded queue, so a request never
waits on a receiver; a job it cannot queue stays pending on disk and is retried by
`retry_deferred` (psik-api's reconciler calls it).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel

from certified.webhooks import WebhookSender

from .jobdir import CURSOR, JobDir
from .models import Callback, Config, JobState

log = logging.getLogger("psik.outbox")

LOCK = "callbacks.lock"
FAILED = "callbacks.failed"


class FailedCallback(BaseModel):
    """One callback given up on, as recorded in `<base>/callbacks.failed`."""

    time: datetime
    jobndx: int
    state: JobState
    url: str
    attempts: int
    reason: str


def _read_cursor(job: JobDir, rows: int) -> int:
    try:
        return int((job.base / CURSOR).read_text())
    except FileNotFoundError:
        return rows  # a folder from before outboxes: nothing is pending
    except ValueError:
        job.note(f"unreadable {CURSOR}; treating every callback as sent")
        return rows


def _write_cursor(job: JobDir, value: int) -> None:
    tmp = job.base / f".{CURSOR}.tmp"
    tmp.write_text(str(value))
    os.replace(tmp, job.base / CURSOR)


def pending(job: JobDir) -> int:
    """How many callbacks of this job wait for delivery."""
    if job.spec().callback is None:
        return 0
    rows = len(job.transitions())
    return max(0, rows - _read_cursor(job, rows))


def failed(job: JobDir) -> list[FailedCallback]:
    path = job.base / FAILED
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(FailedCallback.model_validate_json(line))
    return out


@contextlib.contextmanager
def _try_lock(job: JobDir) -> Iterator[bool]:
    fd = os.open(job.base / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclasses.dataclass
class Delivered:
    """Callbacks one drain delivered and gave up on."""

    delivered: int = 0
    failed: int = 0

    def add(self, other: Delivered) -> None:
        self.delivered += other.delivered
        self.failed += other.failed


def drain(job: JobDir, sender: WebhookSender) -> Delivered:
    """Deliver this job's pending callbacks in order, unless another process is at it;
    return what this call delivered and gave up on."""
    done = Delivered()
    while True:
        with _try_lock(job) as mine:
            if not mine:
                return done  # the holder looks again after letting go (below)
            done.add(_deliver_pending(job, sender))
        if not pending(job):
            return done


def _deliver_pending(job: JobDir, sender: WebhookSender) -> Delivered:
    done = Delivered()
    spec = job.spec()
    rows = job.transitions()
    cursor = _read_cursor(job, len(rows))
    if spec.callback is None:
        if cursor < len(rows):
            _write_cursor(job, len(rows))
        return done
    for index in range(cursor, len(rows)):
        tr = rows[index]
        cb = Callback(jobid=job.jobid, jobndx=tr.jobndx, state=tr.state, info=tr.info)
        what = f"callback {tr.state.value} of job {job.jobid}"
        body = cb.model_dump_json().encode()
        outcome = sender.send(
            spec.callback,
            body,
            spec.cb_secret,
            what=what,
            note=job.note,
            extra_headers=spec.cb_headers,
        )
        if outcome.delivered:
            done.delivered += 1
        else:
            done.failed += 1
            record = FailedCallback(
                time=datetime.now(UTC),
                jobndx=tr.jobndx,
                state=tr.state,
                url=spec.callback,
                attempts=outcome.attempts,
                reason=outcome.reason,
            )
            with open(job.base / FAILED, "a") as fh:
                fh.write(record.model_dump_json() + "\n")
        _write_cursor(job, index + 1)
    return done


def sender_for(config: Config) -> WebhookSender:
    """The sender a process uses for jobs of this config (its identity and allow-list)."""
    return WebhookSender(config.callback, config.certified, config.callback.allowed)


def destination(job: JobDir) -> str | None:
    """The scheme and host:port the job's callbacks go to (what a worker is spent on)."""
    url = job.spec().callback
    if url is None:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclasses.dataclass(frozen=True)
class DispatcherStats:
    """A snapshot of a Dispatcher: jobs waiting now and callbacks handled so far."""

    waiting: int  # jobs queued or waiting for their destination's worker
    busy: int  # destinations a worker is delivering to now
    deferred_now: int  # jobs the full queue deferred, not retried yet
    deferred: int  # jobs ever deferred
    delivered: int  # callbacks delivered by the workers
    failed: int  # callbacks the workers gave up on


class Dispatcher:
    """Worker threads that drain job outboxes; `enqueue` never blocks.

    Each queued job is drained by one worker at a time (the lock file also keeps other
    processes out), and each destination (scheme://host:port) is served by one worker
    at a time: jobs for a destination in use wait on the side, so a receiver that never
    answers holds one worker, never the pool. A full queue defers the job: it stays
    pending on disk, counted in `deferred`, until `retry_deferred`.
    """

    def __init__(self, sender: WebhookSender, workers: int = 4, max_queued: int = 1000) -> None:
        self.sender = sender
        self._queue: queue.Queue[Path | None] = queue.Queue(max_queued)
        self._queued: set[Path] = set()  # in the queue or waiting for their destination
        self._deferred: set[Path] = set()
        self._busy: set[str] = set()  # destinations a worker is delivering to
        self._waiting: dict[str, collections.deque[Path]] = {}
        self._lock = threading.Lock()
        self.deferred = 0
        self._done = Delivered()  # what the workers delivered and gave up on (under _lock)
        self._threads = [
            threading.Thread(target=self._run, name=f"callbacks-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def enqueue(self, job: JobDir) -> None:
        with self._lock:
            if job.base in self._queued:
                return  # a worker will see the new row when it gets there
            if not self._put(job.base):
                return
            self._queued.add(job.base)

    def _put(self, base: Path) -> bool:
        """Queue `base` (under the lock); a full queue defers it."""
        try:
            self._queue.put_nowait(base)
            return True
        except queue.Full:
            self._deferred.add(base)
            self.deferred += 1
            log.warning("callback queue full: job %s deferred", base.name)
            return False

    def retry_deferred(self) -> None:
        with self._lock:
            again, self._deferred = self._deferred, set()
        for base in again:
            self.enqueue(JobDir(base))

    def _run(self) -> None:
        while (base := self._queue.get()) is not None:
            job = JobDir(base)
            try:
                dest = destination(job) if job.exists() else None
            except (OSError, ValueError) as exc:
                log.warning("callbacks of job %s: %s", job.jobid, exc)
                dest = None
            with self._lock:
                if dest is not None and dest in self._busy:
                    self._waiting.setdefault(dest, collections.deque()).append(base)
                    continue
                self._queued.discard(base)
                if dest is not None:
                    self._busy.add(dest)
            try:
                if dest is not None:
                    done = drain(job, self.sender)
                    with self._lock:
                        self._done.add(done)
            except Exception:  # one broken folder must not kill the worker
                log.exception("callbacks of job %s", job.jobid)
            finally:
                if dest is not None:
                    self._release(dest)

    def stats(self) -> DispatcherStats:
        with self._lock:
            return DispatcherStats(
                waiting=len(self._queued),
                busy=len(self._busy),
                deferred_now=len(self._deferred),
                deferred=self.deferred,
                delivered=self._done.delivered,
                failed=self._done.failed,
            )

    def _release(self, dest: str) -> None:
        """Free `dest` and queue the next job waiting for it."""
        with self._lock:
            self._busy.discard(dest)
            waiting = self._waiting.get(dest)
            if waiting:
                nxt = waiting.popleft()
                if not waiting:
                    del self._waiting[dest]
                if not self._put(nxt):
                    self._queued.discard(nxt)

    def close(self, timeout: float) -> None:
        """Let the workers finish every job queued or waiting (up to `timeout` s in all),
        then stop them; what is left stays pending on disk."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queued and not self._busy:
                    break
            time.sleep(0.02)
        for _ in self._threads:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.sender.close()
