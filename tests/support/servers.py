"""Start suite servers as real subprocesses for tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .ports import free_port
from .procs import Proc, ProcessSupervisor


def start_certified_server(
    spawn: ProcessSupervisor,
    config_dir: Path,
    app: str = "certified.whoami:app",
    extra: Sequence[str] = (),
    *,
    name: str = "server",
    env: dict[str, str] | None = None,
) -> tuple[Proc, str]:
    """Run `certified serve APP https://127.0.0.1:PORT`; return the process and its URL."""
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    proc = spawn(
        ["certified", "serve", app, url, "--config", str(config_dir), *extra],
        name=name,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    proc.wait_port(port)
    return proc, url


def start_signer(
    spawn: ProcessSupervisor, config_dir: Path, socket_path: Path, *, days: int = 30
) -> Proc:
    """Run `signer serve` on a UNIX socket and wait until it accepts connections."""
    import socket
    import time

    proc = spawn(
        [
            "signer",
            "serve",
            "--socket",
            str(socket_path),
            "--config",
            str(config_dir),
            "--days",
            str(days),
        ],
        name="signer",
    )
    deadline = time.monotonic() + 20
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"signer exited early:\n{proc.stderr()}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(socket_path))
            return proc
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"signer not listening on {socket_path}") from None
            time.sleep(0.05)


def start_psik_api(
    spawn: ProcessSupervisor,
    identity: Path,
    root: Path,
    *,
    psik: dict | None = None,
    env: dict[str, str] | None = None,
    settings: dict | None = None,
    as_user: str | None = None,
    python: Path | None = None,
) -> tuple[Proc, str]:
    """Run `psik-api serve` as `identity` with jobs under root/jobs; return (proc, URL).

    `psik` is merged into the settings' psik section, `settings` into the top level;
    `as_user` runs it as that UNIX account (the caller must be root), `python` with that
    interpreter (`python -m psik.api.cli`)."""
    import yaml

    port = free_port()
    url = f"https://127.0.0.1:{port}"
    psik_cfg = {"prefix": str(root / "jobs"), "backends": {"default": {"type": "local"}}}
    doc = {"psik": {**psik_cfg, **(psik or {})}, "certified": str(identity), "listen": url}
    cfg = root / "psik-api.yaml"
    cfg.write_text(yaml.safe_dump({**doc, **(settings or {})}))
    argv = ["psik-api"] if python is None else [str(python), "-m", "psik.api.cli"]
    argv += ["serve", "--config", str(cfg)]
    if as_user is not None:
        argv = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--init-groups", *argv]
    proc = spawn(argv, name="psik-api", env=env)
    spawn.reap_jobs(root / "jobs")
    proc.wait_port(port)
    return proc, url


def refused_as_revoked(client, path: str = "/") -> bool:
    """Whether `client` is now refused as revoked: 403 on a connection opened before the
    revocation, or the TLS alert `certificate revoked` on a new one."""
    import httpx

    try:
        resp = client.get(path)
    except httpx.HTTPError as exc:
        if "alert certificate revoked" in str(exc):
            return True
        raise
    if resp.status_code == 403:
        assert "revoked" in resp.json()["detail"]
        return True
    assert resp.status_code == 200, resp.text
    return False


def start_lclstream_api(
    spawn: ProcessSupervisor,
    identity: Path,
    root: Path,
    port: int,
    settings: dict | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Proc, str, Path]:
    """Run `lclstream-api serve` as `identity` on `port`, its database under root;
    return (proc, URL, settings file). Its buffers lease ports from a 40-port range."""
    import random

    import yaml

    url = f"https://127.0.0.1:{port}"
    base = random.randrange(30000, 60000, 40)
    doc = {
        "certified": str(identity),
        "listen": url,
        "database": str(root / "lclstream-api" / "transfers.db"),
        "psik_api": "https://psik",
        "port_range": [base, base + 39],
        "callback_base": "https://lclstream",
        "job_identity": str(identity),
        "reconcile_interval": 1.0,
        "metrics_interval": 1.0,
        **(settings or {}),
    }
    cfg = root / "lclstream-api.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    proc = spawn(["lclstream-api", "serve", "--config", str(cfg)], name="lclstream-api", env=env)
    proc.wait_port(port)
    return proc, url, cfg
