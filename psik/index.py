"""An in-memory index of a job store, rebuilt from the job folders and kept current by
the store's journal, so listing one owner's jobs costs O(page) reads, not O(all jobs).

The folders stay the source of truth: `rebuild` reads every one (at start-up); after
that, every change (JobDir.record, create, remove; from any process) appends the job id
to `<prefix>/.journal`, and `refresh` rereads just those folders (and tells `on_change`,
which psik-api uses to deliver callbacks of rows other processes wrote).
"""

from __future__ import annotations

import bisect
import collections
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .errors import PsikError
from .jobdir import JOURNAL, JobDir, JobStore
from .models import JobState


@dataclass(frozen=True)
class Entry:
    """What a listing shows of one job."""

    jobid: str
    owner: str | None
    name: str
    state: JobState
    jobndx: int
    updated: datetime


def read_entry(
    job: JobDir, owner_of: Callable[[JobDir], str | None] = JobDir.owner
) -> Entry | None:
    """The job's entry, or None if its folder is gone or incomplete."""
    try:
        cur = job.current()
        return Entry(job.jobid, owner_of(job), job.spec().name, cur.state, cur.jobndx, cur.time)
    except (OSError, ValueError, PsikError):
        return None


class JobIndex:
    """Entries by job id plus each owner's job ids in order; thread-safe."""

    def __init__(
        self,
        store: JobStore,
        on_change: Callable[[str], None] | None = None,
        owner_of: Callable[[JobDir], str | None] = JobDir.owner,
    ) -> None:
        self.store = store
        self.on_change = on_change  # called with each job id the journal reports
        self.owner_of = owner_of  # whose listing a job is in
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._by_owner: dict[str | None, list[int]] = {}
        self._offset = 0  # bytes of the journal already applied

    def rebuild(self) -> int:
        """Forget everything and read every job folder; return the number of jobs."""
        journal = self.store.prefix / JOURNAL
        with self._lock:
            self.store.prefix.mkdir(parents=True, exist_ok=True)
            # truncate first: a change after this point is in the journal, so not lost
            with open(journal, "a") as fh:
                fh.truncate(0)
            self._offset = 0
            self._entries.clear()
            self._by_owner.clear()
            for job in self.store.list():
                self._apply(job.jobid)
            return len(self._entries)

    def refresh(self) -> None:
        """Apply the journal's new lines (a shrunk or unreadable journal: rebuild).

        The size is read under the lock: a concurrent refresh may have applied lines
        this one has not seen, so a size read before taking the lock can be stale."""
        journal = self.store.prefix / JOURNAL
        with self._lock:
            try:
                size = os.stat(journal).st_size
            except FileNotFoundError:
                size = 0
            if size == self._offset:
                return
            shrunk = size < self._offset
            changed: list[str] = []
            if not shrunk:
                with open(journal, "rb") as fh:
                    fh.seek(self._offset)
                    data = fh.read(size - self._offset)
                end = data.rfind(b"\n") + 1  # a line being written is read next time
                self._offset += end
                changed = list(dict.fromkeys(data[:end].decode(errors="replace").split()))
                for jobid in changed:
                    self._apply(jobid)
        if shrunk:
            self.rebuild()
            return
        if self.on_change is not None:
            for jobid in changed:
                self.on_change(jobid)

    def _apply(self, jobid: str) -> None:
        """Reread one job (under the lock)."""
        if not jobid.isdigit():
            return
        old = self._entries.pop(jobid, None)
        if old is not None:
            ids = self._by_owner.get(old.owner, [])
            pos = bisect.bisect_left(ids, int(jobid))
            if pos < len(ids) and ids[pos] == int(jobid):
                del ids[pos]
        job = JobDir(self.store.prefix / jobid)
        entry = read_entry(job, self.owner_of) if job.exists() else None
        if entry is not None:
            self._entries[jobid] = entry
            bisect.insort(self._by_owner.setdefault(entry.owner, []), int(jobid))

    def page(
        self, owner: str | None, state: JobState | None, offset: int, limit: int
    ) -> tuple[int, list[Entry]]:
        """(total, entries) of `owner`'s jobs in `state` (any if None), oldest first."""
        self.refresh()
        with self._lock:
            ids = self._by_owner.get(owner, [])
            if state is None:
                total = len(ids)
                chosen = ids[offset : offset + limit]
                return total, [self._entries[str(i)] for i in chosen]
            matching = [str(i) for i in ids if self._entries[str(i)].state is state]
            return len(matching), [self._entries[i] for i in matching[offset : offset + limit]]

    def reread(self, jobids: list[str]) -> None:
        """Reread these jobs from their folders (a journal line lost on a shared file
        system must not leave a stale state behind for good)."""
        with self._lock:
            for jobid in jobids:
                self._apply(jobid)

    def counts(self) -> dict[JobState, int]:
        """How many jobs (of every owner) are in each state; states with none left out."""
        self.refresh()
        with self._lock:
            return dict(collections.Counter(e.state for e in self._entries.values()))

    def unfinished(self) -> list[str]:
        """Ids of jobs whose latest run is not final (what the reconciler watches)."""
        self.refresh()
        with self._lock:
            return [j for j, e in self._entries.items() if not e.state.final]
