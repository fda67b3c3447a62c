"""A thin client of lclstream-api over mTLS as the user's certified identity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from ..models import TransferDetail, TransferPage, TransferState, TransferSummary


class ServerError(Exception):
    """The server refused or could not be reached; the message is its reason."""


def base_url(server: str) -> str:
    """`NICK` -> `https://NICK` (a trusted-service nickname); URLs unchanged."""
    return server if "://" in server else f"https://{server}"


def _reason(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    if isinstance(detail, list):  # validation errors: one located line each
        detail = "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', [])[1:])}: {e.get('msg')}" for e in detail
        )
    return f"HTTP {resp.status_code}: {detail}"


class TransferClient:
    def __init__(self, server: str, certified: Path | None = None, timeout: float = 60) -> None:
        from certified import Certified

        self.url = base_url(server)
        self.http = Certified(certified).client(self.url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ServerError(f"{self.url} unreachable: {exc}") from None
        if resp.status_code not in ok:
            raise ServerError(_reason(resp))
        return resp

    def create(self, config: dict[str, Any], options: dict[str, Any]) -> TransferDetail:
        body = {"config": config, "options": options}
        return TransferDetail.model_validate(
            self._call("POST", "/transfers", (201,), json=body).json()
        )

    def get(self, transfer_id: str) -> TransferDetail:
        return TransferDetail.model_validate(self._call("GET", f"/transfers/{transfer_id}").json())

    def list(
        self, state: TransferState | None = None, limit: int = 100, offset: int = 0
    ) -> TransferPage:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state is not None:
            params["state"] = state.value
        return TransferPage.model_validate(self._call("GET", "/transfers", params=params).json())

    def cancel(self, transfer_id: str) -> TransferSummary:
        return TransferSummary.model_validate(
            self._call("DELETE", f"/transfers/{transfer_id}").json()
        )

    def log(
        self, transfer_id: str, job: str, stream: str, offset: int = 0, tail: int | None = None
    ) -> tuple[bytes, int]:
        params: dict[str, Any] = {"offset": offset}
        if tail is not None:
            params["tail"] = tail
        resp = self._call("GET", f"/transfers/{transfer_id}/logs/{job}/{stream}", params=params)
        return resp.content, int(resp.headers.get("x-next-offset", offset))
