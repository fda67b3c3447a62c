"""psik: file-backed batch jobs (JobSpec, states, logs, signed callbacks) on local and SLURM."""

from .jobs import Psik, announce
from .models import BackendConfig, Callback, Config, JobSpec, JobState, ResourceSpec, Transition

__all__ = [
    "BackendConfig",
    "Callback",
    "Config",
    "JobSpec",
    "JobState",
    "Psik",
    "ResourceSpec",
    "Transition",
    "announce",
]
