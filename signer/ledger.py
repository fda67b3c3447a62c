"""The SQLite ledger of every certificate the signer issued, and revocations."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from certified.errors import CertifiedError

from .models import LedgerRow

SCHEMA = """
CREATE TABLE IF NOT EXISTS signatures (
    serial TEXT PRIMARY KEY,
    login TEXT NOT NULL,
    uid INTEGER NOT NULL,
    key_fingerprint TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS signatures_login ON signatures(login);
"""
COLUMNS = "serial, login, uid, key_fingerprint, not_before, not_after, revoked_at"


def parse_serial(text: str) -> str:
    """Normalise a serial given as hex (optionally 0x-prefixed or colon-separated)."""
    clean = text.lower().removeprefix("0x").replace(":", "")
    try:
        return f"{int(clean, 16):x}"
    except ValueError:
        raise CertifiedError(f"serial {text!r} is not a hexadecimal number") from None


class Ledger:
    """Thin, transactional access to the signatures table."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._conn() as conn:
                conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise CertifiedError(f"signer ledger {self.path}: {exc}") from None

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            with conn:
                yield conn
        finally:
            conn.close()

    def record(self, row: LedgerRow) -> None:
        with self._conn() as conn:
            conn.execute(
                f"INSERT INTO signatures ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    row.serial,
                    row.login,
                    row.uid,
                    row.key_fingerprint,
                    row.not_before.isoformat(),
                    row.not_after.isoformat(),
                    None,
                ),
            )

    def get(self, serial: str) -> LedgerRow:
        with self._conn() as conn:
            cur = conn.execute(f"SELECT {COLUMNS} FROM signatures WHERE serial = ?", (serial,))
            found = cur.fetchone()
        if found is None:
            raise CertifiedError(f"no certificate with serial {serial} in {self.path}")
        return _row(found)

    def by_login(self, login: str) -> list[LedgerRow]:
        with self._conn() as conn:
            cur = conn.execute(
                f"SELECT {COLUMNS} FROM signatures WHERE login = ? ORDER BY not_before", (login,)
            )
            return [_row(r) for r in cur.fetchall()]

    def revoke(self, serial: str | None = None, login: str | None = None) -> list[str]:
        """Mark one serial, or every valid certificate of a login, revoked; return serials."""
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._conn() as conn:
            if serial is not None:
                self.get(serial)
                conn.execute(
                    "UPDATE signatures SET revoked_at = ? WHERE serial = ? AND revoked_at IS NULL",
                    (now, serial),
                )
                return [serial]
            cur = conn.execute(
                "SELECT serial FROM signatures WHERE login = ? AND revoked_at IS NULL", (login,)
            )
            serials = [r[0] for r in cur.fetchall()]
            conn.execute(
                "UPDATE signatures SET revoked_at = ? WHERE login = ? AND revoked_at IS NULL",
                (now, login),
            )
            return serials

    def revoked(self) -> list[tuple[int, dt.datetime]]:
        """(serial, revoked_at) of every revoked certificate, for the CRL."""
        with self._conn() as conn:
            cur = conn.execute(
                "SELECT serial, revoked_at FROM signatures WHERE revoked_at IS NOT NULL"
            )
            return [(int(s, 16), dt.datetime.fromisoformat(t)) for s, t in cur.fetchall()]


def _row(r: tuple) -> LedgerRow:
    return LedgerRow(
        serial=r[0],
        login=r[1],
        uid=r[2],
        key_fingerprint=r[3],
        not_before=dt.datetime.fromisoformat(r[4]),
        not_after=dt.datetime.fromisoformat(r[5]),
        revoked_at=dt.datetime.fromisoformat(r[6]) if r[6] else None,
    )
