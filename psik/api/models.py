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
