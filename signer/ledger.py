"""The SQLite ledger of every certificate the signer issued, and revocations."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from certified.errors import CertifiedError

from .models import LedgerRow
from .policy import PolicyError

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
CREATE INDEX IF NOT EXISTS signatures_key ON signatures(key_fingerprint);
CREATE TABLE IF NOT EXISTS denied (
    login TEXT PRIMARY KEY,
    since TEXT NOT NULL
);
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
        """Store a new signature, unless `refusal` finds a reason not to (PolicyError);
        the check and the insert are one transaction, so `deny` cannot slip between."""
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            reason = _refusal(conn, row.login, row.key_fingerprint)
            if reason is not None:
                raise PolicyError(reason)
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

    def refusal(self, login: str, key_fingerprint: str) -> str | None:
        """Why `login` may not get a certificate for this key now, or None."""
        with self._conn() as conn:
            return _refusal(conn, login, key_fingerprint)

    def deny(self, login: str) -> list[str]:
        """Refuse `login` any certificate until `allow`; revoke its valid ones (serials)."""
        now = _now()
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR IGNORE INTO denied (login, since) VALUES (?, ?)", (login, now))
            return _revoke_login(conn, login, now)

    def allow(self, login: str) -> None:
        """Let a denied login ask for certificates again (its revoked ones stay revoked)."""
        with self._conn() as conn:
            if conn.execute("DELETE FROM denied WHERE login = ?", (login,)).rowcount == 0:
                raise CertifiedError(f"user {login!r} is not denied")

    def denied(self) -> list[tuple[str, dt.datetime]]:
        """(login, since) of every denied user."""
        with self._conn() as conn:
            cur = conn.execute("SELECT login, since FROM denied ORDER BY login")
            return [(login, dt.datetime.fromisoformat(t)) for login, t in cur.fetchall()]

    def rows(self, login: str | None = None) -> list[LedgerRow]:
        """Every signature (of `login`), oldest first."""
        where, args = ("WHERE login = ?", (login,)) if login is not None else ("", ())
        with self._conn() as conn:
            cur = conn.execute(f"SELECT {COLUMNS} FROM signatures {where} ORDER BY rowid", args)
            return [_row(r) for r in cur.fetchall()]

    def get(self, serial: str) -> LedgerRow:
        with self._conn() as conn:
            cur = conn.execute(f"SELECT {COLUMNS} FROM signatures WHERE serial = ?", (serial,))
            found = cur.fetchone()
        if found is None:
            raise CertifiedError(f"no certificate with serial {serial} in {self.path}")
        return _row(found)

    def revoke(self, serial: str | None = None, login: str | None = None) -> list[str]:
        """Mark one serial, or every valid certificate of a login, revoked; return serials."""
        now = _now()
        with self._conn() as conn:
            if serial is not None:
                self.get(serial)
                conn.execute(
                    "UPDATE signatures SET revoked_at = ? WHERE serial = ? AND revoked_at IS NULL",
                    (now, serial),
                )
                return [serial]
            return _revoke_login(conn, login, now)

    def revoked(self) -> list[tuple[int, dt.datetime]]:
        """(serial, revoked_at) of every revoked certificate, for the CRL."""
        with self._conn() as conn:
            cur = conn.execute(
                "SELECT serial, revoked_at FROM signatures WHERE revoked_at IS NOT NULL"
            )
            return [(int(s, 16), dt.datetime.fromisoformat(t)) for s, t in cur.fetchall()]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _revoke_login(conn: sqlite3.Connection, login: str | None, now: str) -> list[str]:
    cur = conn.execute(
        "SELECT serial FROM signatures WHERE login = ? AND revoked_at IS NULL", (login,)
    )
    serials = [r[0] for r in cur.fetchall()]
    conn.execute(
        "UPDATE signatures SET revoked_at = ? WHERE login = ? AND revoked_at IS NULL",
        (now, login),
    )
    return serials


def _refusal(conn: sqlite3.Connection, login: str, key_fingerprint: str) -> str | None:
    if conn.execute("SELECT 1 FROM denied WHERE login = ?", (login,)).fetchone():
        return f"user {login!r} is denied certificates by the signer's administrator"
    revoked = conn.execute(
        "SELECT serial FROM signatures WHERE key_fingerprint = ? AND revoked_at IS NOT NULL",
        (key_fingerprint,),
    ).fetchone()
    if revoked:
        return (
            f"this key's certificate {revoked[0]} was revoked, so the key is never signed"
            " again; make a new key (signer request --new-key)"
        )
    return None


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
