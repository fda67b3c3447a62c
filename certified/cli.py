"""`certified` CLI: create identities, introduce parties, manage trust, serve apps."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from . import admin, exchange
from .cliutil import KeyTypeChoice, run_typer
from .errors import CertifiedError
from .identity import Certified
from .keys import load_certificate
from .layout import Layout, find_config_dir

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


KeyTypeOpt = typer.Option(
    KeyTypeChoice.ed25519,
    "--key-type",
    help="ed25519 (default), or p256 (ECDSA P-256) for what a web browser must reach",
)


@app.command()
def init(
    name: str,
    host: list[str] = typer.Option([], "--host", help="DNS name or IP for the certificate"),
    email: list[str] = typer.Option([], "--email"),
    uri: list[str] = typer.Option([], "--uri"),
    days: int = typer.Option(365, "--days", min=1),
    config: Path | None = ConfigOpt,
    overwrite: bool = typer.Option(False, "--overwrite"),
    key_type: KeyTypeChoice = KeyTypeOpt,
) -> None:
    """Create a signing CA and an identity in the config directory (ed25519 keys, or
    ECDSA P-256 with --key-type p256 for servers and clients that browsers talk to)."""
    root = find_config_dir(config, create=True)
    lay = admin.init_identity(
        root,
        name,
        hosts=host,
        emails=email,
        uris=uri,
        days=days,
        overwrite=overwrite,
        key_type=key_type.value,
    )
    typer.echo(f"created {key_type.value} identity {name!r} in {lay.root}")


FormatOpt = typer.Option(
    "pem", "--format", help="pem, or upstream (url-safe base64 DER, as upstream certified)"
)


def _certificate_pem(path: str, what: str) -> str:
    """A certificate file in any exchange form (PEM, base64 DER, upstream JSON) as PEM."""
    return exchange.to_pem(exchange.read_certificate(_read_input(path), f"{path} ({what})"))


@app.command()
def introduce(
    cert_or_csr: str = typer.Argument(
        ..., help="certificate or CSR file, PEM or upstream base64 DER ('-' for stdin)"
    ),
    days: int = typer.Option(365, "--days", min=1),
    fmt: exchange.Format = FormatOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Sign another party's public key with this CA; prints {signed_cert, ca_cert}.

    With --format upstream, upstream certified's `add-intro` reads the output."""
    request = exchange.read_request(_read_input(cert_or_csr), cert_or_csr)
    signed = admin.introduce(find_config_dir(config), exchange.to_pem(request).encode(), days=days)
    typer.echo(exchange.introduction(signed.certificate(), signed.ca(), fmt))


@app.command("get-ident")
def get_ident(fmt: exchange.Format = FormatOpt, config: Path | None = ConfigOpt) -> None:
    """Print this identity's certificate (to send to a signing authority)."""
    typer.echo(exchange.encode(Certified(config).certificate, fmt).rstrip("\n"))


@app.command("get-signer")
def get_signer(fmt: exchange.Format = FormatOpt, config: Path | None = ConfigOpt) -> None:
    """Print this identity's CA certificate (what others trust it by)."""
    ca = load_certificate(Layout(find_config_dir(config)).ca_cert)
    typer.echo(exchange.signer_document(ca, fmt).rstrip("\n"))


@app.command("add-client")
def add_client(
    name: str,
    ca_cert: str = typer.Argument(
        ..., help="CA certificate: PEM, base64 DER, or upstream get-signer's JSON"
    ),
    users: bool = typer.Option(False, "--users", help="a signer's CA: accept uid:<login>"),
    config: Path | None = ConfigOpt,
) -> None:
    """Trust clients that CA signed: as cn:NAME, or with --users as uid:<login>."""
    path = admin.add_client(
        find_config_dir(config), name, _certificate_pem(ca_cert, "CA certificate"), users=users
    )
    what = "user certificates (uid:<login>)" if users else f"cn:{name}"
    typer.echo(f"trusting {what} signed by {name!r} ({path})")


@app.command("add-service")
def add_service(
    name: str,
    url: str,
    cert: str = typer.Argument(
        ..., help="server or CA certificate: PEM, base64 DER, or upstream JSON with ca_cert"
    ),
    config: Path | None = ConfigOpt,
) -> None:
    """Register service nickname NAME at URL, pinning CERT (server or CA certificate)."""
    path = admin.add_service(find_config_dir(config), name, url, _certificate_pem(cert, name))
    typer.echo(f"service {name!r} -> {url} ({path})")


@app.command("import-service")
def import_service(
    path: str = typer.Argument(..., help="upstream known_servers/NAME.yaml ({url, cert, auths})"),
    name: str | None = typer.Option(None, "--name", help="nickname (default: the file's name)"),
    url: str | None = typer.Option(
        None, "--url", help="https://HOST:PORT (default: the file's url)"
    ),
    config: Path | None = ConfigOpt,
) -> None:
    """Import a trusted service from an upstream certified nickname file."""
    file_url, cert = exchange.read_upstream_service(_read_input(path), path)
    nick = name or Path(path).stem
    target = url or file_url
    saved = admin.add_service(find_config_dir(config), nick, target, exchange.to_pem(cert))
    typer.echo(f"service {nick!r} -> {target} ({saved})")


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
