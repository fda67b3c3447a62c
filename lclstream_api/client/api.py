"""A thin client of lclstream-api over mTLS as the user's certified identity."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from ..models import TransferDetail, TransferPage, TransferState, TransferSummary
from .errors import ServerError

__all__ = ["Client", "ServerError", "base_url"]


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


class Client:
    """lclstream-api's REST calls, typed with the service's models; errors are
    ServerError with the server's reason. `server` is a trusted-service nickname (or an
    https URL), `certified` the user's certified config dir (default: certified's)."""

    def __init__(self, server: str, certified: Path | None = None, timeout: float = 60) -> None:
        from certified import Certified

        self.url = base_url(server)
        self.http = Certified(certified).client(self.url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            from certified.failures import request_failure

            why = request_failure(self.url, f"{method} {path}", exc, self.http.timeout)
            raise ServerError(why) from None
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

    def wait(
        self, transfer_id: str, timeout: float = 120, on_retry=None, poll: float = 0.5
    ) -> TransferDetail | None:
        """The transfer once it is no longer live (completed, failed, canceled); the last
        record seen (None if none) if `timeout` seconds pass first. A ServerError while
        waiting (the service restarting) is passed to `on_retry` and the wait goes on."""
        deadline = time.monotonic() + timeout
        last: TransferDetail | None = None
        while True:
            try:
                last = self.get(transfer_id)
            except ServerError as exc:
                if on_retry is None:
                    raise
                on_retry(exc)
                if time.monotonic() >= deadline:
                    return last
            else:
                if not last.state.live or time.monotonic() >= deadline:
                    return last
            time.sleep(poll)
