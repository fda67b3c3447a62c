"""The web page and `/docs` in headless Chromium (Debian's, driven by Playwright):
through `lclstream ui` with an ed25519 identity, and directly against P-256 servers with
a P-256 client certificate imported into Chromium's own certificate store (NSS).

Each test saves screenshots under its tmp dir and checks the DOM; every request the
browser makes is recorded, and none may leave the services under test (no CDN)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12

from certified import Certified
from certified.keys import load_certificate, load_private_key
from tests.support.browser import (
    auto_select_certificate,
    browser_page,
    chromium,
    nss_import,
    start_ui,
)
from tests.support.pki import make_pki
from tests.support.suite import Suite, pipeline

pytestmark = pytest.mark.timeout(300)
LIVE_BODY = {"options": {"producers": 1, "idle_timeout": 600}}


@pytest.fixture(autouse=True)
def _need_chromium():
    chromium()


def start_live(client) -> str:
    resp = client.post("/transfers", json={"config": pipeline(100000, rate_hz=5), **LIVE_BODY})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def record_requests(page) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    return seen


def only_from(urls: list[str], *origins: str) -> None:
    allowed = {urlsplit(o)._replace(path="", query="").geturl() for o in origins}
    strays = [u for u in urls if f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" not in allowed]
    assert urls and not strays, f"requests outside the services: {strays}"


def wait_state(page, tid: str, states: tuple[str, ...], timeout_s: float) -> None:
    """Wait until the page shows transfer `tid` in one of `states`; fail saying what the
    page showed instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "([id, states]) => states.includes("
            "document.querySelector(`tr[data-id='${id}']`)?.dataset.state)",
            arg=[tid, list(states)],
            timeout=timeout_s * 1000,
        )
    except PlaywrightTimeout:
        shown = page.locator(f'tr[data-id="{tid}"]').get_attribute("data-state")
        status = page.locator("#status").inner_text()
        raise AssertionError(f"{tid} shown as {shown!r}, not {states} (status: {status})") from None


def check_page_follows_a_transfer(page, base: str, tid: str, shots: Path) -> None:
    """The list shows the live transfer; cancelling it from the page updates its state;
    its detail view shows the transition log and the jobs' log tails."""
    page.goto(f"{base}/")
    row = page.locator(f'#transfers tr[data-id="{tid}"]')
    row.wait_for(timeout=30_000)
    wait_state(page, tid, ("provisioning", "streaming"), 60)
    assert row.locator("meter").count() == 1  # buffer fill, from live metrics
    page.screenshot(path=str(shots / "list-live.png"), full_page=True)
    page.on("dialog", lambda d: d.accept())
    row.locator("button.cancel").click()
    wait_state(page, tid, ("canceled",), 60)
    assert row.locator("button.cancel").count() == 0
    page.screenshot(path=str(shots / "list-canceled.png"), full_page=True)
    row.locator("a").click()
    page.wait_for_url(f"**/web/transfers/{tid}")
    page.wait_for_function("document.body.dataset.state === 'canceled'", timeout=30_000)
    sources = page.locator("#d-transitions tbody tr td:nth-child(4)").all_inner_texts()
    assert "user" in sources, sources
    page.locator('pre[data-log="producer/stderr"]').wait_for(timeout=30_000)
    page.screenshot(path=str(shots / "detail.png"), full_page=True)
    assert (shots / "detail.png").stat().st_size > 0


def check_docs(page, base: str, title: str, shots: Path) -> None:
    page.goto(f"{base}/docs")
    page.locator(".swagger-ui .info .title").wait_for(timeout=30_000)
    assert title in page.locator(".swagger-ui .info .title").inner_text()
    page.locator(".opblock").first.wait_for(timeout=30_000)
    page.screenshot(path=str(shots / f"docs-{title}.png"), full_page=True)


def test_page_and_docs_through_lclstream_ui(pki, spawn, tmp_path):
    suite = Suite(pki, spawn, tmp_path, ["lclstream"])
    pki.add_service(pki.client, "psik", suite.psik_url)
    with suite.client() as client:
        tid = start_live(client)
    _ui, url = start_ui(spawn, pki.client)
    _psik_ui, psik_url = start_ui(spawn, pki.client, server="psik")
    base, psik_base = url.split("/?")[0], psik_url.split("/?")[0]
    with browser_page(tmp_path) as page:
        seen = record_requests(page)
        page.goto(url)  # the printed URL: its token becomes a cookie
        assert page.url == f"{base}/"
        assert "cn:client" in page.locator("#who").inner_text()
        check_page_follows_a_transfer(page, base, tid, tmp_path)
        page.goto(psik_url)
        check_docs(page, psik_base, "psik-api", tmp_path)
        check_docs(page, base, "lclstream-api", tmp_path)
        only_from(seen, base, psik_base)


def test_page_and_docs_direct_with_p256_certificates(spawn, tmp_path):
    pki = make_pki(tmp_path / "pki", server_key="p256", client_key="p256")
    suite = Suite(pki, spawn, tmp_path, ["lclstream"])
    with suite.client() as client:
        tid = start_live(client)
    # The user's P-256 identity as a PKCS#12 file, imported into Chromium's NSS store;
    # the servers' P-256 CA trusted there for TLS servers.
    p12 = tmp_path / "client.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"client",
            load_private_key(pki.client / "id.key"),
            load_certificate(pki.client / "id.crt"),
            None,
            NoEncryption(),
        )
    )
    home = tmp_path / "home"
    nss_import(home, pki.server / "CA.crt", p12)
    auto_select_certificate(tmp_path / "chromium-profile", [suite.url, suite.psik_url], "client CA")
    with browser_page(tmp_path, home=home) as page:
        seen = record_requests(page)
        page.goto(f"{suite.url}/")
        assert "cn:client" in page.locator("#who").inner_text()
        check_page_follows_a_transfer(page, suite.url, tid, tmp_path)
        check_docs(page, suite.psik_url, "psik-api", tmp_path)
        check_docs(page, suite.url, "lclstream-api", tmp_path)
        only_from(seen, suite.url, suite.psik_url)
    assert Certified(pki.client).identity == "cn:client"


def test_chromium_refuses_an_ed25519_server_which_is_why_p256_exists(pki, spawn, tmp_path):
    from playwright.sync_api import Error as PlaywrightError

    from tests.support.servers import start_certified_server

    _proc, url = start_certified_server(spawn, pki.server)  # ed25519 identities
    # (NSS cannot even store an ed25519 CA; the handshake fails before any trust check.)
    with (
        browser_page(tmp_path) as page,
        pytest.raises(PlaywrightError, match="ERR_SSL_VERSION_OR_CIPHER_MISMATCH"),
    ):
        page.goto(f"{url}/")
