"""The web page and `lclstream ui` without a browser: what each identity is shown and may
do, the proxy's guards, and `/docs` served without a CDN. Real stack as in
tests/e2e/test_transfers.py (mTLS, psik-api, buffers, mpirun)."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.support.browser import start_ui
from tests.support.suite import Suite, pipeline

pytestmark = pytest.mark.timeout(240)
SLOW = {"options": {"producers": 1, "idle_timeout": 600}}


@pytest.fixture
def suite(pki, spawn, tmp_path):
    ops = pki.new_identity("ops")
    s = Suite(pki, spawn, tmp_path, ["lclstream"], api_settings={"operators": ["cn:ops"]})
    pki.add_service(ops, "lclstream", s.url)
    s.ops = ops
    return s


def start_live(client: httpx.Client) -> str:
    """A transfer that streams slowly (nobody consumes it), so it stays live."""
    body = {"config": pipeline(100000, rate_hz=5), **SLOW}
    resp = client.post("/transfers", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def test_page_and_json_show_the_callers_transfers_operators_see_all(suite, pki):
    with suite.client() as mine, suite.client(pki.other) as theirs, suite.client(suite.ops) as ops:
        a, b = start_live(mine), start_live(theirs)
        page = mine.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "cn:client &middot; your transfers" in page.text
        assert 'src="/web/static/app.js"' in page.text
        assert "operator: every transfer" in ops.get("/").text
        detail = mine.get(f"/web/transfers/{a}").text
        assert f'data-transfer="{a}"' in detail and 'data-view="detail"' in detail
        assert mine.get("/web/static/app.js").status_code == 200
        assert [t["id"] for t in mine.get("/transfers").json()["transfers"]] == [a]
        assert [t["id"] for t in theirs.get("/transfers").json()["transfers"]] == [b]
        assert {t["id"] for t in ops.get("/transfers").json()["transfers"]} == {a, b}
        # The page's cancel button calls DELETE: refused for someone else's transfer.
        assert mine.delete(f"/transfers/{b}").status_code == 404
        assert mine.get(f"/transfers/{b}").status_code == 404
        assert theirs.get(f"/transfers/{b}").json()["state"] in ("provisioning", "streaming")
        # An operator may cancel anyone's.
        assert ops.delete(f"/transfers/{b}").json()["state"] == "canceled"
        assert mine.delete(f"/transfers/{a}").json()["state"] == "canceled"


def test_a_cross_site_simple_post_cannot_create_a_transfer(suite):
    """A browser holding a client certificate sends it to any page's requests; a foreign
    page may POST text/plain without a CORS preflight. The service reads only JSON."""
    import json

    body = json.dumps({"config": pipeline(10)})
    with suite.client() as mine:
        resp = mine.post("/transfers", content=body, headers={"content-type": "text/plain"})
        assert resp.status_code == 422
        assert mine.get("/transfers").json()["total"] == 0


def test_ui_says_when_the_server_is_unreachable(pki, spawn, free_port):
    pki.add_service(pki.client, "gone", f"https://127.0.0.1:{free_port()}")
    _proc, url = start_ui(spawn, pki.client, server="gone")
    with httpx.Client(timeout=60, follow_redirects=True) as browser:
        resp = browser.get(url)
    assert resp.status_code == 502
    assert resp.text.startswith("lclstream ui: https://gone is unreachable:")


def test_a_transfer_id_is_escaped_in_the_page(suite):
    with suite.client() as mine:
        page = mine.get('/web/transfers/"><b onclick=x>').text
    assert "<b onclick" not in page and 'data-transfer="&quot;&gt;&lt;b onclick=x&gt;"' in page


def test_docs_are_served_without_a_cdn(suite):
    with suite.client() as mine:
        html = mine.get("/docs").text
        assert "/docs/assets/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
        js = mine.get("/docs/assets/swagger-ui-bundle.js")
        assert js.status_code == 200 and len(js.content) > 100_000
        assert mine.get("/openapi.json").json()["info"]["title"] == "lclstream-api"
    with psik_client(suite) as psik:
        html = psik.get("/docs").text
        assert "/docs/assets/swagger-ui.css" in html and "cdn" not in html.lower()
        assert psik.get("/docs/assets/swagger-ui.css").status_code == 200


def psik_client(suite) -> httpx.Client:
    from certified import Certified

    return Certified(suite.pki.server).client("https://psik", timeout=60)


def test_ui_proxy_forwards_as_the_user_and_guards_its_door(suite, spawn, pki):
    proc, url = start_ui(spawn, pki.client)
    base = url.split("/?")[0]
    port = int(base.rsplit(":", 1)[1])
    with httpx.Client(base_url=base, timeout=60) as browser, suite.client(pki.other) as theirs:
        # No token, a wrong token, another Host: refused before anything is forwarded.
        assert browser.get("/transfers").status_code == 403
        assert "open the URL" in browser.get("/transfers").text
        assert browser.get("/?token=nope").status_code == 403
        entry = browser.get(url)
        assert entry.status_code == 303 and entry.headers["location"] == "/"
        cookie = entry.headers["set-cookie"]
        assert f"lclstream_ui_{port}=" in cookie and "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        page = browser.get("/")
        assert page.status_code == 200 and "cn:client &middot; your transfers" in page.text
        evil = browser.get("/", headers={"host": f"attacker.example:{port}"})
        assert evil.status_code == 403 and "not this proxy's address" in evil.text
        # Forwarded with the user's identity: the user's own transfers only.
        a, b = start_live(browser), start_live(theirs)
        assert [t["id"] for t in browser.get("/transfers").json()["transfers"]] == [a]
        assert browser.get(f"/transfers/{b}").status_code == 404
        cross = browser.delete(f"/transfers/{a}", headers={"origin": "http://evil.example"})
        assert cross.status_code == 403 and "cross-site" in cross.text
        assert browser.delete(f"/transfers/{b}").status_code == 404
        same = browser.delete(f"/transfers/{a}", headers={"origin": base})
        assert same.json()["state"] == "canceled"
        theirs.delete(f"/transfers/{b}")
        # Logs stream through too (plain bytes, the server's headers kept).
        logs = browser.get(f"/transfers/{a}/logs").json()
        assert "producer" in logs
    proc.signal(signal.SIGINT)
    assert proc.wait(30) == 0
    assert "lclstream ui: stopped" in proc.stderr()


def test_ui_refuses_non_loopback_and_unknown_servers(pki, tmp_path):
    import subprocess

    def ui(*args: str) -> subprocess.CompletedProcess:
        cmd = ["lclstream", "ui", "--config", str(pki.client), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

    wide = ui("--address", "0.0.0.0")
    assert wide.returncode == 2 and wide.stderr.startswith("lclstream: error: --address 0.0.0.0:")
    assert "not a loopback address" in wide.stderr and len(wide.stderr.splitlines()) == 1
    name = ui("--address", "localhost")
    assert name.returncode == 2 and "give a loopback IP address" in name.stderr
    unknown = ui("--server", "nosuch")
    assert unknown.returncode == 1 and "unknown service nickname 'nosuch'" in unknown.stderr
    assert "Traceback" not in wide.stderr + name.stderr + unknown.stderr


def test_guard_rules_without_a_server():
    from lclstream_api.client.api import ServerError
    from lclstream_api.client.ui import Guard, check_loopback

    assert check_loopback("127.0.0.2") == "127.0.0.2" and check_loopback("::1") == "::1"
    for host in ("10.0.0.1", "0.0.0.0", "::", "example.org"):
        with pytest.raises(ServerError):
            check_loopback(host)
    g = Guard("s3cret", 8080)
    ok = {"host": "[::1]:8080", "cookie": "a=b; lclstream_ui_8080=s3cret"}
    assert g.check("DELETE", {**ok, "origin": "http://[::1]:8080"}) is None
    assert "wrong token" in g.check("GET", {**ok, "cookie": "lclstream_ui_8080=s3cre"})
    assert "wrong token" in g.check("GET", {**ok, "cookie": "lclstream_ui_9090=s3cret"})
    assert "not this proxy" in g.check("GET", {**ok, "host": "[::1]:9090"})
    assert "cross-site" in g.check("POST", {**ok, "origin": "null"})
    # A read is not refused by origin: SameSite=Strict keeps the cookie off cross-site
    # requests, and the same-origin policy keeps the answer from a foreign page.
    assert g.check("GET", {**ok, "origin": "http://evil.example"}) is None
