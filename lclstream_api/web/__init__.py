"""The web page lclstream-api serves at `/`: a server-rendered shell plus a little
vanilla JavaScript that polls the service's own JSON endpoints (no build step, no CDN).

The page calls `GET /transfers`, `GET /transfers/{id}`, the log endpoints and
`DELETE /transfers/{id}`, so what it shows and what its cancel button may do are
exactly what the REST API allows the caller (operators see every transfer)."""

from __future__ import annotations

from collections.abc import Collection
from html import escape
from importlib.resources import files
from string import Template

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from certified.asgi import client_identity

STATIC = files(__name__) / "static"
PREFIX = "/web/static"


def render_page(identity: str, operator: bool, transfer_id: str | None = None) -> str:
    """The HTML shell for `identity`: the list, or the detail of `transfer_id`."""
    page = Template((STATIC / "page.html").read_text())
    return page.substitute(
        identity=escape(identity),
        role="operator: every transfer" if operator else "your transfers",
        view="detail" if transfer_id else "list",
        transfer=escape(transfer_id or ""),
        static=PREFIX,
    )


def mount_web(app: FastAPI, operators: Collection[str]) -> None:
    """Serve the page at `/` and `/web/transfers/{id}`, its assets under `/web/static`."""
    app.mount(PREFIX, StaticFiles(directory=str(STATIC)), name="web-static")

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> HTMLResponse:
        ident = client_identity(request)
        return HTMLResponse(render_page(ident, ident in operators), headers=NO_STORE)

    @app.get("/web/transfers/{transfer_id}", include_in_schema=False)
    def transfer_page(transfer_id: str, request: Request) -> HTMLResponse:
        ident = client_identity(request)
        return HTMLResponse(render_page(ident, ident in operators, transfer_id), headers=NO_STORE)


NO_STORE = {"cache-control": "no-store"}
