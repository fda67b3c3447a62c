"""`certified` CLI: create identities, introduce parties, manage trust, serve apps."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from . import admin
from .cliutil import run_typer
from .errors import CertifiedError
from .identity import Certified
from .layout import find_config_dir

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ConfigOpt = typer.Option(
    None,
    "--config",
    help="config directory (else $CERTIFIED_CONFIG, $VIRTUAL_ENV/etc/certified, /etc/certified)",
)


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertifiedError(f"{path}: {exc.strerror}") from None


@app.command()
def init(
    name: str,
    host: list[str] = typer.Option([], "--host", help="DNS name or IP for the certificate"),
    email: list[str] = typer.Option([], "--email"),
    uri: list[str] = typer.Option([], "--uri"),
    days: int = typer.Option(365, "--days", min=1),
    config: Path | None = ConfigOpt,
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Create a signing CA and an identity (ed25519) in the config directory."""
    root = find_config_dir(config, create=True)
    lay = admin.init_identity(
        root, name, hosts=host, emails=email, uris=uri, days=days, overwrite=overwrite
    )
    typer.echo(f"created identity {name!r} in {lay.root}")


@app.command()
def introduce(
    cert_or_csr: str = typer.Argument(..., help="PEM certificate or CSR file ('-' for stdin)"),
    days: int = typer.Option(365, "--days", min=1),
    config: Path | None = ConfigOpt,
) -> None:
    """Sign another party's public key with this CA; prints {signed_cert, ca_cert}."""
    signed = admin.introduce(find_config_dir(config), _read_input(cert_or_csr), days=days)
    typer.echo(signed.model_dump_json(indent=2))


@app.command("add-client")
def add_client(
    name: str,
    ca_cert: str,
    users: bool = typer.Option(False, "--users", help="a signer's CA: accept uid:<login>"),
    config: Path | None = ConfigOpt,
) -> None:
    """Trust clients that CA signed: as cn:NAME, or with --users as uid:<login>."""
    path = admin.add_client(
        find_config_dir(config), name, _read_input(ca_cert).decode(), users=users
    )
    what = "user certificates (uid:<login>)" if users else f"cn:{name}"
    typer.echo(f"trusting {what} signed by {name!r} ({path})")


@app.command("add-service")
def add_service(name: str, url: str, cert: str, config: Path | None = ConfigOpt) -> None:
    """Register service nickname NAME at URL, pinning CERT (server or CA certificate)."""
    path = admin.add_service(find_config_dir(config), name, url, _read_input(cert).decode())
    typer.echo(f"service {name!r} -> {url} ({path})")


@app.command("list")
def list_(config: Path | None = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show this identity and whom it trusts, with expiry dates."""
    items = admin.list_trust(find_config_dir(config))
    if as_json:
        typer.echo(json.dumps([i.model_dump(mode="json") for i in items], indent=2))
        return
    for i in items:
        where = f"  {i.url}" if i.url else ""
        typer.echo(f"{i.kind:9} {i.name:24} expires {i.not_after:%Y-%m-%d}  {i.subject}{where}")


@app.command()
def serve(
    app_path: str = typer.Argument(..., metavar="APP", help="module:attribute of an ASGI app"),
    url: str = typer.Argument(..., help="https://HOST:PORT to listen on"),
    config: Path | None = ConfigOpt,
    crl: str | None = typer.Option(None, "--crl", help="CRL file or unix:/path/signer.sock"),
    crl_refresh: float = typer.Option(10.0, "--crl-refresh", help="seconds between CRL reloads"),
    factory: bool = typer.Option(False, "--factory", help="APP is a factory to call"),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve an ASGI app over mTLS (TLS 1.3, client certificate required)."""
    from .serve import run_server

    run_server(
        app_path,
        url,
        certified=Certified(config),
        crl=crl,
        crl_refresh=crl_refresh,
        factory=factory,
        log_level=log_level,
    )


def main() -> None:
    run_typer(app, "certified")
