"""lclstream-api's contracts (pydantic v2): the transfer request, the record the state
machine works on, its events and actions, and what GET returns. The client shares these;
nothing here does I/O."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

from certified.models import Strict
from nngstream.fifo import WhenFull
from nngstream.models import Delivery, Metrics, Proto


class TransferState(StrEnum):
    PROVISIONING = "provisioning"
    STREAMING = "streaming"
    DRAINING = "draining"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def live(self) -> bool:
        return self in (self.PROVISIONING, self.STREAMING, self.DRAINING)


class TransferOptions(Strict):
    """What the service decides with the user for one transfer."""

    producers: Annotated[int, Field(ge=1, description="MPI ranks of the producer job")] = 2
    backend: Annotated[str, Field(description="psik backend of the producer job")] = "default"
    protocol: Proto = Field(default=Proto.NNG, description="what consumers speak (nng or zmq)")
    buffers: Annotated[int, Field(ge=1, le=64, description="parallel buffers")] = 1
    delivery: Delivery = Delivery.AT_MOST_ONCE
    max_buffer_bytes: Annotated[int, Field(ge=1)] = 1024**3
    when_full: WhenFull = WhenFull.BLOCK
    provisioning_timeout: Annotated[float, Field(gt=0, le=86400)] = 300.0
    idle_timeout: Annotated[float, Field(gt=0, le=86400)] = 600.0
    draining_timeout: Annotated[float, Field(gt=0, le=86400)] = 600.0
    duration: Annotated[int, Field(ge=1, le=10080, description="job wall time, minutes")] = 60


class TransferRequest(Strict):
    """`POST /transfers`: an lclstreamer configuration without `data_handlers`."""

    config: dict[str, Any]
    options: TransferOptions = Field(default_factory=TransferOptions)


JobStateName = Literal["new", "queued", "active", "completed", "failed", "canceled"]
JOB_RANK = {"new": 0, "queued": 1, "active": 2, "completed": 3, "failed": 3, "canceled": 3}


class JobRef(Strict):
    jobid: str
    state: JobStateName = "new"
    info: str = ""


class Transition(Strict):
    time: float
    old: TransferState | None
    new: TransferState
    source: str  # user | service | callback | reconciler | timer
    reason: str = ""


class Transfer(Strict):
    """The record the state machine steps (persisted as is)."""

    id: str
    owner: str
    state: TransferState = TransferState.PROVISIONING
    reason: str = ""
    created: float
    updated: float
    options: TransferOptions
    roles: list[str] = Field(description="producer, buffer-0..buffer-K-1")
    jobs: dict[str, JobRef] = Field(default_factory=dict)
    urls: list[str] = Field(default_factory=list)
    ports: list[int] = Field(default_factory=list)
    metrics: dict[str, Metrics] = Field(default_factory=dict)
    idle_since: float | None = None
    draining_since: float | None = None
    transitions: list[Transition] = Field(default_factory=list)
    secret: str = Field(default="", exclude=True)


# -- events ------------------------------------------------------------------------------
class JobSeen(Strict):
    """A job's state, from a callback, the reconciler or the service's own submission."""

    kind: Literal["job"] = "job"
    role: str
    jobid: str
    state: JobStateName
    info: str = ""
    source: str
    time: float


class MetricsSeen(Strict):
    kind: Literal["metrics"] = "metrics"
    role: str
    metrics: Metrics
    source: str = "callback"
    time: float


class CancelRequested(Strict):
    kind: Literal["cancel"] = "cancel"
    source: str = "user"
    time: float


class ProvisionFailed(Strict):
    kind: Literal["provision_failed"] = "provision_failed"
    reason: str
    source: str = "service"
    time: float


class Tick(Strict):
    kind: Literal["tick"] = "tick"
    source: str = "timer"
    time: float


Event = JobSeen | MetricsSeen | CancelRequested | ProvisionFailed | Tick


# -- actions -----------------------------------------------------------------------------
class CancelJobs(Strict):
    """Cancel `jobids` now; `after_grace` (buffers, which end their stream with an end
    message once their producers are gone) only if still running after a grace period."""

    kind: Literal["cancel_jobs"] = "cancel_jobs"
    jobids: list[str]
    after_grace: list[str] = Field(default_factory=list)


class ReleasePorts(Strict):
    kind: Literal["release_ports"] = "release_ports"


Action = CancelJobs | ReleasePorts


# -- responses ---------------------------------------------------------------------------
class TransferSummary(Strict):
    id: str
    owner: str
    state: TransferState
    reason: str
    created: float
    updated: float
    urls: list[str]
    protocol: Proto
    delivery: Delivery


class TransferDetail(TransferSummary):
    options: TransferOptions
    jobs: dict[str, JobRef]
    metrics: dict[str, Metrics]
    transitions: list[Transition]


class TransferPage(Strict):
    total: int
    offset: int
    transfers: list[TransferSummary]


def summary(t: Transfer) -> TransferSummary:
    return TransferSummary(
        id=t.id,
        owner=t.owner,
        state=t.state,
        reason=t.reason,
        created=t.created,
        updated=t.updated,
        urls=t.urls,
        protocol=t.options.protocol,
        delivery=t.options.delivery,
    )


def detail(t: Transfer) -> TransferDetail:
    return TransferDetail(
        **summary(t).model_dump(),
        options=t.options,
        jobs=t.jobs,
        metrics=t.metrics,
        transitions=t.transitions,
    )
