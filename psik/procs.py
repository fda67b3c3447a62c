"""Process-group and session helpers for killing a job and everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil


def session_members(sid: int) -> list[int]:
    """Pids of every live process in session `sid` (zombies excluded)."""
    out = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getsid(proc.pid) == sid:
                out.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return out


def group_alive(pgid: int) -> bool:
    """True while any process is in group `pgid` (a zombie leader counts)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_session(sid: int, sig: int = signal.SIGKILL) -> int:
    """Send `sig` to every process of session `sid`; return how many were signalled."""
    count = 0
    for pid in session_members(sid):
        try:
            os.kill(pid, sig)
            count += 1
        except (ProcessLookupError, PermissionError):
            pass
    return count


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait for a process that may not be our child to disappear (or become a zombie)."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False
