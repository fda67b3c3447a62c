"""Swagger UI for a service's `/docs`, served from the service itself (no CDN).

The machines the suite runs on often have no route to the internet, and FastAPI's
default `/docs` page loads Swagger UI from a CDN. `offline_docs` serves the Swagger UI 5
assets the `fastapi-offline` package ships (only its files are used), under
`/docs/assets/`. Swagger UI 5 is needed: FastAPI's schemas are OpenAPI 3.1."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def offline_docs(app: FastAPI) -> None:
    """Add `/docs` (Swagger UI from local assets) to an app made with `docs_url=None`."""
    assets = files("fastapi_offline") / "static"
    app.mount(ASSETS, StaticFiles(directory=str(assets)), name="swagger-ui-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
