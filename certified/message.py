"""`message`: a curl-like mTLS client that resolves service nicknames."""

from __future__ import annotations

import json
import ssl
import sys
from pathlib import Path

import httpx
import typer

from .cliutil import run_typer
from .errors import CertifiedError
from .failures import request_failure
from .identity import Certified
from .yamlload import load_yaml

app = typer.Typer(add_completion=False)


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise CertifiedError(f"header {text!r} must look like 'Name: value'")
    return name.strip(), value.strip()


def build_body(
    data: str | None, json_file: Path | None, yaml_file: Path | None
) -> tuple[dict, bytes | None]:
    """Headers and body bytes from DATA, --json FILE or --yaml FILE (at most one)."""
    given = [x for x in (data, json_file, yaml_file) if x is not None]
    if len(given) > 1:
        raise CertifiedError("give at most one of DATA, --json, --yaml")
    if json_file is not None or yaml_file is not None:
        path = json_file or yaml_file
        try:
            text = path.read_text()
        except OSError as exc:
            raise CertifiedError(f"{path}: {exc.strerror}") from None
        if json_file is not None:
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise CertifiedError(f"{path}: invalid JSON: {exc}") from None
        else:
            obj = load_yaml(text, str(path))
        return {"content-type": "application/json"}, json.dumps(obj).encode()
    if data is None:
        return {}, None
    try:
        json.loads(data)
        return {"content-type": "application/json"}, data.encode()
    except json.JSONDecodeError:
        return {"content-type": "text/plain"}, data.encode()


@app.command()
def message(
    url: str = typer.Argument(..., help="https://NICKNAME/path or https://HOST:PORT/path"),
    data: str | None = typer.Argument(None, help="request body (JSON or text)"),
    method: str | None = typer.Option(None, "-X", "--request", help="HTTP method"),
    json_file: Path | None = typer.Option(None, "--json", help="send this JSON file"),
    yaml_file: Path | None = typer.Option(None, "--yaml", help="send this YAML file as JSON"),
    header: list[str] = typer.Option([], "-H", "--header", help="'Name: value'"),
    config: Path | None = typer.Option(None, "--config", help="certified config directory"),
    timeout: float = typer.Option(30.0, "--timeout"),
) -> None:
    """Send one HTTPS request over mTLS; print the (pretty JSON) response."""
    headers, body = build_body(data, json_file, yaml_file)
    headers.update(parse_header(h) for h in header)
    verb = (method or ("POST" if body is not None else "GET")).upper()
    try:
        with Certified(config).client(timeout=timeout) as client:
            resp = client.request(verb, url, content=body, headers=headers)
    except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
        why = request_failure("the server", verb, exc, httpx.Timeout(timeout))
        raise CertifiedError(f"{verb} {url}: {why}") from None
    try:
        out = json.dumps(resp.json(), indent=2)
    except ValueError:
        out = resp.text
    if resp.is_error:
        typer.echo(f"HTTP {resp.status_code} {resp.reason_phrase}", err=True)
        typer.echo(out, err=True)
        raise SystemExit(1)
    typer.echo(out)


def main() -> None:
    run_typer(app, "message")


if __name__ == "__main__":
    sys.exit(main())
