"""psik's contracts: job specifications, states, transitions, callbacks and configuration."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import (
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

from certified.errors import CertifiedError
from certified.models import Strict
from certified.webhooks import Destinations, RetryPolicy

_ATTR_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BACKEND_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: callback headers psik itself sets (or the HTTP client must own).
_OWN_HEADERS = frozenset(
    {"content-type", "content-length", "host", "x-hub-signature-256", "transfer-encoding"}
)


class JobState(StrEnum):
    """Where a job is in its life. The last three are final."""

    new = "new"
    queued = "queued"
    active = "active"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"

    @property
    def final(self) -> bool:
        return self in (JobState.completed, JobState.failed, JobState.canceled)


class ResourceSpec(Strict):
    """What the job needs from the scheduler, with PSI/J's (and upstream psik's) meaning.

    `duration` is in minutes (fractions allowed). `node_count` None lets the scheduler
    choose. As in PSI/J, process_count = node_count x processes_per_node: the one left
    out is inferred (`process_count` is stored; unset, it is node_count x
    processes_per_node, one per node, or 1), and values that break the rule are refused
    naming the fields.
    """

    duration: Annotated[float, Field(gt=0, le=60 * 24 * 365)] = 10.0
    node_count: Annotated[int, Field(ge=1)] | None = None
    process_count: Annotated[int, Field(ge=1)] | None = None
    processes_per_node: Annotated[int, Field(ge=1)] | None = None
    cpu_cores_per_process: Annotated[int, Field(ge=1)] = 1
    gpu_cores_per_process: Annotated[int, Field(ge=0)] = 0
    #: False, as PSI/J (upstream psik says True): the suite's jobs are small (a 2-rank
    #: streamer, a buffer) and share nodes; a job that needs whole nodes says so.
    exclusive_node_use: StrictBool = False

    @model_validator(mode="after")
    def _derive_counts(self) -> ResourceSpec:
        nodes, ppn, procs = self.node_count, self.processes_per_node, self.process_count
        if procs is None:
            self.process_count = (nodes or 1) * (ppn or 1)
        elif nodes is not None and ppn is not None:
            if procs != nodes * ppn:
                raise ValueError(
                    f"process_count {procs} contradicts node_count {nodes} x "
                    f"processes_per_node {ppn} (= {nodes * ppn}); give two of the three"
                )
        elif ppn is not None and procs % ppn:
            raise ValueError(f"process_count {procs} is not a multiple of processes_per_node {ppn}")
        elif nodes is not None and procs % nodes:
            raise ValueError(f"process_count {procs} is not a multiple of node_count {nodes}")
        return self

    @property
    def nodes(self) -> int:
        """node_count, or 1 when unset (the job's `nodes` when the scheduler does not say)."""
        return self.node_count or 1


def _check_attributes(value: dict[str, str]) -> dict[str, str]:
    from .backends import reserved_attribute  # the registry imports these models

    for key, val in value.items():
        if not _ATTR_KEY.match(key):
            raise ValueError(f"attribute name {key!r} must match {_ATTR_KEY.pattern}")
        if (reserved := reserved_attribute(key)) is not None:  # the backends' rules
            shown = key if key == reserved else f"{key!r} (an abbreviation of {reserved!r})"
            raise ValueError(f"attribute {shown} is set by psik or the operator, not a JobSpec")
        if "\n" in val or "\r" in val or "\0" in val:
            raise ValueError(f"attribute {key!r} value must be one line")
    return value


class JobSpec(Strict):
    """A job request: what to run, where, with what resources, and whom to tell."""

    #: any one-line printable text (upstream psik's README uses "machine info"); null -> "job".
    name: Annotated[str, Field(min_length=1, max_length=128)] = "job"
    directory: str | None = None
    script: Annotated[str, Field(min_length=1)]
    environment: dict[str, str] = Field(default_factory=dict)
    inherit_environment: StrictBool = True
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    backend: Annotated[str, Field(pattern=_BACKEND_NAME.pattern)] = "default"
    attributes: dict[str, str] = Field(default_factory=dict)
    callback: str | None = None
    #: extra HTTP headers sent with every callback (upstream psik's field).
    cb_headers: dict[str, str] = Field(default_factory=dict)
    cb_secret: str | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> object:
        if value is None:
            return "job"
        if isinstance(value, str) and not value.isprintable():
            raise ValueError("name must be one line of printable text")
        return value

    @field_validator("cb_headers")
    @classmethod
    def _cb_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not _HEADER_NAME.match(key):
                raise ValueError(f"cb_headers name {key!r} is not an HTTP header name")
            if key.lower() in _OWN_HEADERS:
                raise ValueError(f"cb_headers may not set {key!r}: psik sets it")
            if not val.isprintable():
                raise ValueError(f"cb_headers value of {key!r} must be one line")
        return value

    @field_validator("environment")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not _ENV_KEY.match(key):
                raise ValueError(f"environment name {key!r} is not a valid variable name")
            if "\0" in val:
                raise ValueError(f"environment value of {key!r} contains a NUL byte")
        return value

    @field_validator("attributes")
    @classmethod
    def _attrs(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_attributes(value)

    @field_validator("callback")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("callback must be an http(s) URL")
        return value

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str | None) -> str | None:
        if value is not None and ("\0" in value or not value):
            raise ValueError("directory must be a non-empty path")
        if value is not None and (value.startswith("~") or ".." in value.split("/")):
            raise ValueError("directory must not start with '~' or contain '..'")
        return value

    @model_validator(mode="after")
    def _secret_needs_callback(self) -> JobSpec:
        if self.cb_secret is not None and self.callback is None:
            raise ValueError("cb_secret given without a callback")
        if self.cb_headers and self.callback is None:
            raise ValueError("cb_headers given without a callback")
        return self


class BackendConfig(Strict):
    """How one named backend submits jobs. Lives in the operator's config only."""

    #: a key of psik.backends.REGISTRY.
    type: str = "local"
    queue_name: str | None = None
    project_name: str | None = None
    reservation_id: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        from .backends import REGISTRY

        if value not in REGISTRY:
            raise ValueError(f"unknown backend type {value!r} (known: {', '.join(REGISTRY)})")
        return value

    @field_validator("attributes")
    @classmethod
    def _attrs(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not _ATTR_KEY.match(key):
                raise ValueError(f"attribute name {key!r} must match {_ATTR_KEY.pattern}")
            if "\n" in val or "\r" in val:
                raise ValueError(f"attribute {key!r} value must be one line")
        return value


class Transition(Strict):
    """One row of status.csv."""

    time: datetime
    jobndx: Annotated[int, Field(ge=1)]
    state: JobState
    info: str = ""


class Callback(Strict):
    """The body POSTed to JobSpec.callback on every transition."""

    jobid: str
    jobndx: int
    state: JobState
    info: str = ""


class CallbackPolicy(RetryPolicy):
    """How hard to try delivering one callback, and where callbacks may go.

    `allowed` lists service nicknames and URL prefixes (see certified.webhooks.Destinations);
    None allows any destination (psik-api treats None as "none allowed").
    """

    allowed: list[str] | None = None

    @field_validator("allowed")
    @classmethod
    def _allowed(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            try:
                Destinations(value)
            except CertifiedError as exc:
                raise ValueError(str(exc)) from None
        return value


class Config(Strict):
    """psik's configuration: where job folders live and which backends exist."""

    prefix: Path = Path("~/.local/share/psik/jobs")
    backends: dict[str, BackendConfig] = Field(
        default_factory=lambda: {"default": BackendConfig(type="local")}
    )
    #: certified config dir used to send callbacks over mTLS (None: plain httpx).
    certified: Path | None = None
    callback: CallbackPolicy = Field(default_factory=CallbackPolicy)
    #: seconds between SIGTERM and SIGKILL when a job is cancelled or overruns.
    kill_grace: Annotated[float, Field(gt=0)] = 5.0
    #: True: only the submitting service sends callbacks (it holds the identity); the
    #: job's wrapper, running as the user, just records rows (psik-api run_as caller).
    service_callbacks: StrictBool = False

    @field_validator("backends")
    @classmethod
    def _names(cls, value: dict[str, BackendConfig]) -> dict[str, BackendConfig]:
        if not value:
            raise ValueError("at least one backend is needed")
        for name in value:
            if not _BACKEND_NAME.match(name):
                raise ValueError(f"backend name {name!r} must match {_BACKEND_NAME.pattern}")
        return value

    @field_validator("prefix", "certified")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()
