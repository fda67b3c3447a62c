"""The listing index under concurrent readers while the journal grows."""

from __future__ import annotations

import threading

from psik.index import JobIndex
from psik.jobdir import JobStore, journal
from psik.models import Config, JobSpec


def test_concurrent_refreshes_while_the_journal_grows(tmp_path):
    """Many threads listing while jobs are recorded: every refresh sees a consistent
    journal offset (a size read outside the lock once made reads of negative length)."""
    store = JobStore(tmp_path / "jobs")
    config = Config(prefix=tmp_path / "jobs")
    index = JobIndex(store)
    index.rebuild()
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for _ in range(40):
                job = store.create(JobSpec(script="true"), config, owner="uid:alice")
                for _ in range(20):
                    journal(store.prefix, job.jobid)
        finally:
            done.set()

    def reader() -> None:
        try:
            while not done.is_set():
                index.page("uid:alice", None, 0, 10)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    total, _ = index.page("uid:alice", None, 0, 10)
    assert total == 40
