"""How the service starts, follows and stops jobs: one small protocol, two
implementations (psik-api over mTLS, the default; psik in this process, for single-host
deployments and tests).

Least privilege: with `delegate` on (the default), jobs of a `uid:` owner are submitted
to psik-api with `X-On-Behalf-Of: uid:<login>`, so psik-api owns them to (and, with
`run_as: caller`, runs them as) that user and records the service as `delegated_by`;
psik-api must list the service's identity in its `delegators`. Other owners (`cn:`
services) and in-process psik jobs run as the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from psik.models import Config, JobSpec


class LaunchError(Exception):
    """A job could not be submitted, followed or cancelled (the message says why)."""


class JobLauncher(Protocol):
    #: whether jobs can call this service back (else the reconciler alone follows them)
    callbacks: bool

    def submit(self, spec: JobSpec, on_behalf_of: str) -> str:
        """Create and submit `spec`; its job id."""

    def cancel(self, jobid: str) -> None:
        """Stop the job if it is still queued or running (no error if it is finished)."""

    def state(self, jobid: str) -> tuple[str, str]:
        """(state, info of the latest transition)."""

    def log(self, jobid: str, stream: str, offset: int) -> tuple[bytes, int]:
        """Log bytes from `offset` and the next offset."""

    def close(self) -> None: ...


def delegation_headers(on_behalf_of: str, delegate: bool = True) -> dict[str, str]:
    """Headers asking psik-api to own and run a job as its user: only for `uid:` owners
    (psik-api delegates to users, never to other services) and when `delegate` is on."""
    if delegate and on_behalf_of.startswith("uid:"):
        return {"X-On-Behalf-Of": on_behalf_of}
    return {}


class PsikApiLauncher:
    """psik-api over mTLS as the service's certified identity (URL pinned by nickname)."""

    callbacks = True

    def __init__(
        self, certified: Path | None, base_url: str, timeout: float = 30.0, delegate: bool = True
    ) -> None:
        from certified import Certified

        self.base_url = base_url
        self.delegate = delegate
        self.client = Certified(certified).client(base_url, timeout=timeout)

    def _call(self, method: str, path: str, **kw):
        import httpx

        try:
            return self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            from certified.failures import request_failure

            why = request_failure(f"psik-api at {self.base_url}", f"{method} {path}", exc,
                                  self.client.timeout)  # fmt: skip
            if isinstance(exc, httpx.ReadTimeout):  # it took the request: say where to look
                why += " (psik-api may be waiting on its batch system, e.g. sbatch: see its log)"
            raise LaunchError(why) from None

    def submit(self, spec: JobSpec, on_behalf_of: str) -> str:
        resp = self._call(
            "POST",
            "/jobs",
            content=spec.model_dump_json(exclude_none=True),
            headers={
                "content-type": "application/json",
                **delegation_headers(on_behalf_of, self.delegate),
            },
        )
        if resp.status_code != 201:
            raise LaunchError(f"psik-api refused job {spec.name!r}: {_detail(resp)}")
        return resp.json()["jobid"]

    def cancel(self, jobid: str) -> None:
        resp = self._call("DELETE", f"/jobs/{jobid}")
        if resp.status_code not in (200, 409, 404):
            raise LaunchError(f"psik-api did not cancel job {jobid}: {_detail(resp)}")

    def state(self, jobid: str) -> tuple[str, str]:
        resp = self._call("GET", f"/jobs/{jobid}")
        if resp.status_code != 200:
            raise LaunchError(f"psik-api: job {jobid}: {_detail(resp)}")
        doc = resp.json()
        last = doc["transitions"][-1] if doc.get("transitions") else {}
        return doc["state"], last.get("info", "")

    def log(self, jobid: str, stream: str, offset: int) -> tuple[bytes, int]:
        resp = self._call("GET", f"/jobs/{jobid}/logs/{stream}", params={"offset": offset})
        if resp.status_code != 200:
            raise LaunchError(f"psik-api: job {jobid} {stream}: {_detail(resp)}")
        return resp.content, int(resp.headers.get("x-psik-next-offset", offset))

    def close(self) -> None:
        self.client.close()


class LocalLauncher:
    """psik in this process, with the operator's psik Config (jobs owned by the service).
    No callbacks: the reconciler reads the job folders."""

    callbacks = False

    def __init__(self, config: Config) -> None:
        from psik.jobs import Psik

        self.psik = Psik(config)

    def submit(self, spec: JobSpec, on_behalf_of: str) -> str:
        from psik.errors import PsikError

        del on_behalf_of  # in-process jobs run as the service (no delegation)
        try:
            job = self.psik.create(spec)
            self.psik.submit(job)
        except PsikError as exc:
            raise LaunchError(f"psik refused job {spec.name!r}: {exc}") from None
        return job.jobid

    def cancel(self, jobid: str) -> None:
        from psik.errors import IllegalTransition, PsikError

        try:
            self.psik.cancel(self.psik.store.get(jobid))
        except IllegalTransition:
            pass
        except PsikError as exc:
            raise LaunchError(f"job {jobid}: {exc}") from None

    def state(self, jobid: str) -> tuple[str, str]:
        job = self.psik.store.get(jobid)
        self.psik.reconcile(job)
        cur = job.current()
        return cur.state.value, cur.info

    def log(self, jobid: str, stream: str, offset: int) -> tuple[bytes, int]:
        job = self.psik.store.get(jobid)
        path = job.log_path(stream, job.current().jobndx)
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read(1 << 20)
        except FileNotFoundError:
            data = b""
        return data, offset + len(data)

    def close(self) -> None:
        pass


def _detail(resp) -> str:
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    return f"HTTP {resp.status_code}: {detail}"
