"""SQLite (WAL) persistence: transfers (with their jobs), transitions and port leases.

A lease is taken in one IMMEDIATE transaction, so two transfers never get the same port,
and it lives in the database, so it survives restarts until `release`."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from .models import Transfer, TransferState

SCHEMA = """
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL, created REAL NOT NULL,
    secret TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS transfers_owner ON transfers(owner, created);
CREATE TABLE IF NOT EXISTS transitions (
    transfer_id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL, old TEXT,
    new TEXT NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (transfer_id, seq));
CREATE TABLE IF NOT EXISTS leases (port INTEGER PRIMARY KEY, transfer_id TEXT NOT NULL);
"""


class PortsExhausted(Exception):
    pass


class Store:
    """One connection shared under a lock (the service's calls are short)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def save(self, t: Transfer, secret: str | None = None) -> None:
        """Insert or update `t` and append its transitions not yet stored."""
        doc = t.model_dump_json()
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if secret is not None:
                    self.db.execute(
                        "INSERT INTO transfers VALUES (?,?,?,?,?,?)",
                        (t.id, t.owner, t.state.value, t.created, secret, doc),
                    )
                else:
                    self.db.execute(
                        "UPDATE transfers SET state=?, doc=? WHERE id=?", (t.state.value, doc, t.id)
                    )
                (have,) = self.db.execute(
                    "SELECT COUNT(*) FROM transitions WHERE transfer_id=?", (t.id,)
                ).fetchone()
                self.db.executemany(
                    "INSERT INTO transitions VALUES (?,?,?,?,?,?,?)",
                    [
                        (t.id, i, x.time, x.old, x.new.value, x.source, x.reason)
                        for i, x in enumerate(t.transitions)
                        if i >= have
                    ],
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def get(self, transfer_id: str) -> Transfer | None:
        with self.lock:
            row = self.db.execute(
                "SELECT doc, secret FROM transfers WHERE id=?", (transfer_id,)
            ).fetchone()
        if row is None:
            return None
        t = Transfer.model_validate_json(row[0])
        t.secret = row[1]
        return t

    def page(
        self, owner: str | None, state: TransferState | None, offset: int, limit: int
    ) -> tuple[int, list[Transfer]]:
        """Transfers (of `owner`, or everyone's), oldest first."""
        where, args = [], []
        if owner is not None:
            where.append("owner=?")
            args.append(owner)
        if state is not None:
            where.append("state=?")
            args.append(state.value)
        cond = f"WHERE {' AND '.join(where)}" if where else ""
        with self.lock:
            (total,) = self.db.execute(f"SELECT COUNT(*) FROM transfers {cond}", args).fetchone()
            rows = self.db.execute(
                f"SELECT doc FROM transfers {cond} ORDER BY created, id LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return total, [Transfer.model_validate_json(r[0]) for r in rows]

    def live(self, owner: str | None = None) -> list[str]:
        states = [s.value for s in TransferState if s.live]
        q = f"SELECT id FROM transfers WHERE state IN ({','.join('?' * len(states))})"
        args: list = list(states)
        if owner is not None:
            q += " AND owner=?"
            args.append(owner)
        with self.lock:
            return [r[0] for r in self.db.execute(q, args).fetchall()]

    def count_by_state(self) -> dict[TransferState, int]:
        """How many transfers are in each state (states with none are left out)."""
        with self.lock:
            rows = self.db.execute("SELECT state, COUNT(*) FROM transfers GROUP BY state")
            return {TransferState(state): n for state, n in rows.fetchall()}

    def transitions(self, transfer_id: str) -> list[tuple]:
        with self.lock:
            return self.db.execute(
                "SELECT seq, old, new, source, reason FROM transitions WHERE transfer_id=?"
                " ORDER BY seq",
                (transfer_id,),
            ).fetchall()

    def lease(
        self, transfer_id: str, n: int, ports: Iterable[int], usable: Callable[[int], bool]
    ) -> list[int]:
        """Lease `n` ports from `ports` not leased and `usable` (free on the host), or raise
        PortsExhausted."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                taken = {r[0] for r in self.db.execute("SELECT port FROM leases")}
                got: list[int] = []
                for port in ports:
                    if port not in taken and usable(port):
                        got.append(port)
                        if len(got) == n:
                            break
                if len(got) < n:
                    raise PortsExhausted(f"{len(taken)} leased, {len(got)} more free, {n} needed")
                self.db.executemany(
                    "INSERT INTO leases VALUES (?,?)", [(p, transfer_id) for p in got]
                )
                self.db.execute("COMMIT")
                return got
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def release(self, transfer_id: str) -> None:
        with self.lock:
            self.db.execute("DELETE FROM leases WHERE transfer_id=?", (transfer_id,))

    def leased(self, transfer_id: str | None = None) -> list[int]:
        with self.lock:
            if transfer_id is None:
                rows = self.db.execute("SELECT port FROM leases ORDER BY port")
            else:
                rows = self.db.execute(
                    "SELECT port FROM leases WHERE transfer_id=? ORDER BY port", (transfer_id,)
                )
            return [r[0] for r in rows]
