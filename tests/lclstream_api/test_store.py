"""SQLite store: leases never double-allocated, survive reopening, released per transfer;
transfers and their transitions persist (real SQLite in WAL mode)."""

from __future__ import annotations

import socket
import threading

import pytest

from lclstream_api.machine import step
from lclstream_api.models import JobSeen, Transfer, TransferOptions, TransferState
from lclstream_api.store import PortsExhausted, Store

pytestmark = pytest.mark.timeout(30)


def transfer(tid: str, owner: str = "uid:a", created: float = 0.0) -> Transfer:
    return Transfer(
        id=tid, owner=owner, created=created, updated=created, options=TransferOptions(),
        roles=["producer", "buffer-0"],
    )  # fmt: skip


def test_wal_and_persistence_across_reopen(tmp_path):
    db = tmp_path / "t.db"
    store = Store(db)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    t = transfer("a")
    store.save(t, secret="s3cret")
    t, _ = step(t, JobSeen(role="producer", jobid="1", state="active", source="callback", time=1))
    t, _ = step(t, JobSeen(role="buffer-0", jobid="2", state="active", source="reconciler", time=2))
    store.save(t)
    store.lease("a", 2, range(40000, 40010), lambda p: True)
    store.close()

    again = Store(db)
    got = again.get("a")
    assert got is not None and got.state is TransferState.STREAMING and got.secret == "s3cret"
    assert got.jobs["buffer-0"].jobid == "2"
    assert again.transitions("a") == [
        (0, "provisioning", "streaming", "reconciler", "every job is running")
    ]
    assert again.leased("a") == [40000, 40001] and again.live() == ["a"]
    assert "s3cret" not in got.model_dump_json()  # the secret never leaves in a response


def test_leases_are_never_double_allocated(tmp_path):
    store = Store(tmp_path / "t.db")
    got: list[list[int]] = []
    errors: list[Exception] = []

    def take(i: int) -> None:
        try:
            got.append(store.lease(f"t{i}", 2, range(41000, 41020), lambda p: True))
        except PortsExhausted as exc:
            errors.append(exc)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    ports = [p for g in got for p in g]
    assert len(got) == 10 and len(errors) == 2  # 20 ports, 2 per transfer
    assert len(set(ports)) == len(ports) == 20
    holders = [f"t{i}" for i in range(12) if store.leased(f"t{i}")]
    assert len(holders) == 10
    store.release(holders[0])
    store.release(holders[1])
    assert len(store.leased()) == 16
    assert len(store.lease("new", 4, range(41000, 41020), lambda p: True)) == 4


def test_ports_busy_on_the_host_are_skipped(tmp_path):
    store = Store(tmp_path / "t.db")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        busy = held.getsockname()[1]

        def usable(port: int) -> bool:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    return False
            return True

        with pytest.raises(PortsExhausted):
            store.lease("a", 1, [busy], usable)
    assert store.leased() == []


def test_listing_by_owner_state_and_page(tmp_path):
    store = Store(tmp_path / "t.db")
    for i in range(5):
        store.save(transfer(f"t{i}", "uid:a" if i % 2 == 0 else "uid:b", float(i)), secret="x")
    total, items = store.page("uid:a", None, 1, 1)
    assert total == 3 and [t.id for t in items] == ["t2"]
    total, items = store.page(None, TransferState.PROVISIONING, 0, 100)
    assert total == 5
    assert store.page("uid:c", None, 0, 10) == (0, [])
