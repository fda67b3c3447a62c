"""`signer` CLI: serve on a UNIX socket, request a certificate, revoke, inspect."""

from __future__ import annotations

import enum
import json
import os
import pwd
import socket
from pathlib import Path

import httpx
import typer

from certified.cliutil import KeyTypeChoice, run_typer
from certified.errors import CertifiedError
from certified.keys import load_private_key, write_pem, write_private_key
from certified.layout import Layout, find_config_dir
from certified.pki import key_type_of, make_csr, new_key, pem, subject_name

from .ledger import Ledger, parse_serial
from .settings import SignerSettings


class State(enum.StrEnum):
    valid = "valid"
    revoked = "revoked"
    expired = "expired"


app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ConfigOpt = typer.Option(None, "--config", help="certified config directory")
DbOpt = typer.Option(None, "--db", help="ledger (default: CONFIG/signer.db)")


def _ledger(config: Path | None, db: Path | None) -> Ledger:
    path = db or find_config_dir(config) / "signer.db"
    if not path.exists():
        raise CertifiedError(f"signer ledger {path} does not exist")
    return Ledger(path)


def _socket_in_use(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


@app.command()
def serve(
    socket_path: Path = typer.Option(..., "--socket", help="UNIX socket to listen on"),
    config: Path | None = ConfigOpt,
    db: Path | None = DbOpt,
    days: int = typer.Option(30, "--days", min=1, help="validity of issued certificates"),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Sign users' CSRs as uid:<login>, the login taken from the socket peer (SO_PEERCRED)."""
    from certified.serve import run_unix_server

    from .app import create_app
    from .peercred import PeerCredProtocol

    settings = SignerSettings(
        config_dir=find_config_dir(config), socket=socket_path, db=db, days=days
    )
    if socket_path.exists():
        if _socket_in_use(socket_path):
            raise CertifiedError(f"another signer is already serving on {socket_path}")
        socket_path.unlink()
    run_unix_server(create_app(settings), socket_path, http=PeerCredProtocol, log_level=log_level)


def _client(socket_path: Path) -> httpx.Client:
    if not socket_path.exists():
        raise CertifiedError(f"no signer socket at {socket_path}")
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://signer", timeout=30
    )


@app.command()
def request(
    socket_path: Path = typer.Option(..., "--socket", help="the signer's UNIX socket"),
    config: Path | None = ConfigOpt,
    new: bool = typer.Option(False, "--new-key", help="replace your key (e.g. after revocation)"),
    key_type: KeyTypeChoice | None = typer.Option(
        None,
        "--key-type",
        help="type of a new key: ed25519 (default) or p256 (for a browser to import)",
    ),
) -> None:
    """Get a certificate for your login; the private key stays in your config dir."""
    login = pwd.getpwuid(os.getuid()).pw_name
    root = find_config_dir(config, create=True)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    lay = Layout(root)
    fresh = new or not lay.id_key.exists()
    kind = key_type.value if key_type else "ed25519"
    key = new_key(kind) if fresh else load_private_key(lay.id_key)
    if not fresh and key_type and key_type_of(key) != kind:
        raise CertifiedError(
            f"{lay.id_key} is a {key_type_of(key)} key; add --new-key to replace it"
            f" with a {kind} key"
        )
    csr = make_csr(key, subject_name(login, uid=login))
    with _client(socket_path) as client:
        try:
            resp = client.post("/sign", json={"csr": pem(csr)})
        except httpx.HTTPError as exc:
            raise CertifiedError(f"signer at {socket_path}: {exc}") from None
    if resp.is_error:
        detail = (
            resp.json().get("detail", resp.text)
            if resp.headers.get("content-type", "").startswith("application/json")
            else resp.text
        )
        raise CertifiedError(f"signer refused: {detail}")
    body = resp.json()
    if fresh:  # the key is kept only once it is certified
        write_private_key(lay.id_key, key, overwrite=True)
    write_pem(lay.id_cert, body["cert"] + body["ca_cert"], overwrite=True)
    typer.echo(
        f"installed uid:{login} certificate serial {body['serial']} "
        f"(expires {body['not_after']}) in {lay.id_cert}"
    )


@app.command()
def revoke(
    serial: str | None = typer.Argument(None, help="hex serial of the certificate"),
    user: str | None = typer.Option(None, "--user", help="revoke every certificate of LOGIN"),
    config: Path | None = ConfigOpt,
    db: Path | None = DbOpt,
) -> None:
    """Revoke one certificate or all of a user's (administrator, on the ledger)."""
    if (serial is None) == (user is None):
        raise CertifiedError("give exactly one of SERIAL or --user LOGIN")
    ledger = _ledger(config, db)
    done = ledger.revoke(serial=parse_serial(serial) if serial else None, login=user)
    if not done:
        raise CertifiedError(f"user {user!r} has no valid certificate to revoke")
    for s in done:
        typer.echo(f"revoked {s}")


@app.command()
def deny(user: str, config: Path | None = ConfigOpt, db: Path | None = DbOpt) -> None:
    """Refuse USER any certificate until `signer allow USER`; revoke their valid ones."""
    for serial in _ledger(config, db).deny(user):
        typer.echo(f"revoked {serial}")
    typer.echo(f"denied {user}")


@app.command()
def allow(user: str, config: Path | None = ConfigOpt, db: Path | None = DbOpt) -> None:
    """Let a denied USER ask for certificates again."""
    _ledger(config, db).allow(user)
    typer.echo(f"allowed {user}")


@app.command("ls")
def list_(
    user: str | None = typer.Option(None, "--user", help="only this login's certificates"),
    state: State | None = typer.Option(None, "--state", help="only certificates in this state"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
    config: Path | None = ConfigOpt,
    db: Path | None = DbOpt,
) -> None:
    """List issued certificates (oldest first) and denied users."""
    ledger = _ledger(config, db)
    rows = [r for r in ledger.rows(user) if state is None or r.state == state.value]
    for r in rows:
        if as_json:
            typer.echo(json.dumps({**r.model_dump(mode="json"), "state": r.state}))
        else:
            typer.echo(
                f"{r.serial:40} {r.login:16} {r.state:8} expires {r.not_after:%Y-%m-%d %H:%M}"
            )
    if not as_json:
        for login, since in ledger.denied():
            if user in (None, login):
                typer.echo(f"denied {login} since {since:%Y-%m-%d %H:%M}")


@app.command()
def status(serial: str, config: Path | None = ConfigOpt, db: Path | None = DbOpt) -> None:
    """Show a certificate's ledger row and state (valid, expired, revoked)."""
    row = _ledger(config, db).get(parse_serial(serial))
    typer.echo(json.dumps({**row.model_dump(mode="json"), "state": row.state}, indent=2))


@app.command()
def crl(
    config: Path | None = ConfigOpt,
    db: Path | None = DbOpt,
    out: Path | None = typer.Option(None, "--out", "-o", help="write here (atomically)"),
) -> None:
    """Export the current revocation list (PEM CRL) for `certified serve --crl`."""
    from .authority import Authority

    root = find_config_dir(config)
    text = Authority(root, _ledger(config, db)).crl_pem()
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_pem(out, text, overwrite=True)
        typer.echo(f"wrote {out}")


def main() -> None:
    run_typer(app, "signer")
