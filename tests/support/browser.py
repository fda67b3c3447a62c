"""Web-facing helpers: `lclstream ui` as a subprocess, and headless Chromium driven by
Playwright (with Debian's /usr/bin/chromium; never a downloaded browser)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

from .ci import require_executable, require_module
from .procs import Proc, ProcessSupervisor
from .waiting import wait_until

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL = "apt-get install chromium chromium-driver libnss3-tools (as .ci/run does)"


def start_ui(spawn: ProcessSupervisor, who: Path, server: str = "lclstream") -> tuple[Proc, str]:
    """Run `lclstream ui --server SERVER --port 0` as identity `who`; return the process
    and the URL it printed (with its token)."""
    proc = spawn(["lclstream", "ui", "--server", server, "--config", str(who)], name=f"ui-{server}")

    def url() -> str | None:
        if proc.popen.poll() is not None:
            raise AssertionError(f"lclstream ui exited early:\n{proc.stderr()}")
        m = re.search(r"^open (http://\S+)$", proc.stdout(), re.M)
        return m.group(1) if m else None

    return proc, wait_until(url, 30, "lclstream ui to print its URL")


def chromium() -> str:
    """Debian's chromium, or skip (fail in CI) saying how to install it."""
    require_module("playwright.sync_api", "playwright (the suite's [browser] extra)")
    return require_executable("chromium", INSTALL, ("/usr/bin",))


def nss_import(home: Path, ca_pem: Path, p12: Path | None = None) -> None:
    """Chromium's certificate store for HOME: trust `ca_pem` for servers and, with `p12`,
    import that client certificate and key."""
    certutil = require_executable("certutil", INSTALL)
    pk12util = require_executable("pk12util", INSTALL)
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{args[0]}: {done.stderr}"

    run(certutil, "-N", "-d", f"sql:{db}", "--empty-password")
    run(
        certutil, "-A", "-d", f"sql:{db}", "-n", "lclstream-test-ca", "-t", "C,,", "-i", str(ca_pem)
    )
    if p12 is not None:
        run(pk12util, "-i", str(p12), "-d", f"sql:{db}", "-W", "")


def auto_select_certificate(user_data: Path, urls: list[str], issuer_cn: str) -> None:
    """The `AutoSelectCertificateForUrls` content setting in a fresh profile (what the
    policy of that name sets): Chromium sends the client certificate issued by
    `issuer_cn` to each of `urls` without asking."""
    prefs = user_data / "Default" / "Preferences"
    prefs.parent.mkdir(parents=True, exist_ok=True)
    setting = {"filters": [{"ISSUER": {"CN": issuer_cn}}]}
    doc = {
        "profile": {
            "content_settings": {
                "exceptions": {
                    "auto_select_certificate": {
                        f"{url},*": {"setting": setting, "last_modified": "0"} for url in urls
                    }
                }
            }
        }
    }
    prefs.write_text(json.dumps(doc))


@contextmanager
def browser_page(tmp: Path, *, home: Path | None = None):
    """A Playwright page in a fresh headless Chromium profile under `tmp`; HOME (where
    Chromium's NSS certificate store lives) is `home` if given."""
    exe = chromium()
    from playwright.sync_api import sync_playwright

    user_data = tmp / "chromium-profile"
    user_data.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home or tmp / "home")}
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(user_data),
            executable_path=exe,
            headless=True,
            args=CHROMIUM_FLAGS,
            env=env,
            ignore_https_errors=False,
        )
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            yield page
        finally:
            ctx.close()
    shutil.rmtree(user_data, ignore_errors=True)
