"""psik-api's response models: the contract its clients (the transfer service) rely on."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from ..models import JobSpec, JobState, Transition
from ..outbox import FailedCallback


class JobSummary(BaseModel):
    jobid: str
    name: str
    state: JobState
    jobndx: int
    updated: datetime


class JobPage(BaseModel):
    total: int
    offset: int
    jobs: list[JobSummary]


class CallbackStatus(BaseModel):
    """Delivery of the job's callbacks: how many wait, and those given up on."""

    pending: int
    failed: list[FailedCallback]


class JobDetail(JobSummary):
    spec: JobSpec
    transitions: list[Transition]
    callbacks: CallbackStatus
    #: the UNIX login the job runs as (run_as caller; None: the service's account).
    run_as: str | None = None
    #: the service identity that submitted it for its owner (X-On-Behalf-Of), if any.
    delegated_by: str | None = None


class BackendInfo(BaseModel):
    name: str
    type: str


class FileEntry(BaseModel):
    name: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int


class ErrorDetail(BaseModel):
    """The body of every 4xx/5xx the service itself raises."""

    detail: str
