"""The process group: MPI through mpi4py when launched by mpirun/srun, else one process.

mpi4py is imported only here and only when an MPI launcher started us, so the
rest of the package (and its config models) works without MPI.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


class Comm(Protocol):
    """The few collective operations the engine needs."""

    rank: int
    size: int

    def allgather(self, obj: Any) -> list[Any]: ...

    def gather(self, obj: Any) -> list[Any] | None: ...

    def abort(self, code: int) -> None: ...

    def rounds(self) -> Rounds: ...


class Rounds(Protocol):
    """Ranks that keep in step, round after round, apart from the job's collectives."""

    def wait(self, stop: Callable[[], bool]) -> bool:
        """Return once every rank started this round (True), or once `stop()` (False)."""
        ...

    def leave(self, rounds: int) -> None:
        """This rank stops early: it starts every round up to `rounds` without waiting,
        so the others do not wait for it."""
        ...


class SoloRounds:
    """One process is always in step."""

    def wait(self, stop: Callable[[], bool]) -> bool:
        return True

    def leave(self, rounds: int) -> None:
        return None


class SoloComm:
    """A group of one process (no MPI)."""

    rank = 0
    size = 1

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def gather(self, obj: Any) -> list[Any] | None:
        return [obj]

    def rounds(self) -> Rounds:
        return SoloRounds()

    def abort(self, code: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class MPIComm:
    """MPI_COMM_WORLD through mpi4py."""

    def __init__(self) -> None:
        from mpi4py import MPI

        self._comm = MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        self._rounds = MPIRounds(self._comm.Dup())  # collective: made where every rank is

    def allgather(self, obj: Any) -> list[Any]:
        self._arrive()
        return self._comm.allgather(obj)

    def gather(self, obj: Any) -> list[Any] | None:
        self._arrive()
        return self._comm.gather(obj, root=0)

    def rounds(self) -> Rounds:
        """The job's rounds, on a communicator of their own: they never meet the job's
        collectives, so a rank that stops early cannot leave them mismatched."""
        return self._rounds

    def _arrive(self) -> None:
        """Wait, sleeping, until every rank reached this collective. MPICH's blocking
        collectives poll a core at 100% while they wait: a rank that finished its share
        early would take CPU from the ranks (and the other programs of a pipeline) still
        working. Adds at most ~10 ms to a collective."""
        _sleep_until_done(self._comm.Ibarrier(), longest=0.01)

    def abort(self, code: int) -> None:
        """End every rank of the job now (a failed rank must not leave others waiting)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self._comm.Abort(code)


class MPIRounds:
    """Rounds over MPI: a nonblocking barrier per round, waited for sleeping (a blocking
    MPI barrier spins a core while it waits)."""

    def __init__(self, comm: Any) -> None:
        self._comm = comm
        self.started = 0

    def wait(self, stop: Callable[[], bool]) -> bool:
        req = self._comm.Ibarrier()
        self.started += 1
        return _sleep_until_done(req, longest=0.005, stop=stop)

    def leave(self, rounds: int) -> None:
        while self.started < rounds:
            self._comm.Ibarrier()  # completes once the others arrive; nobody waits for it
            self.started += 1


def _sleep_until_done(req: Any, longest: float, stop: Callable[[], bool] | None = None) -> bool:
    """Wait for MPI request `req` sleeping between tests (pauses doubling from 0.1 ms up to
    `longest`): True once it completed, False once `stop()` said so first."""
    pause = 0.0001
    while not req.Test():
        if stop is not None and stop():
            return False
        time.sleep(pause)
        pause = min(pause * 2, longest)
    return True


def launched_by_mpi(env: Mapping[str, str]) -> bool:
    """True when an MPI launcher started this process (or LCLSTREAMER_MPI=1 says so)."""
    forced = env.get("LCLSTREAMER_MPI")
    if forced in ("0", "1"):
        return forced == "1"
    return any(name in env for name in _LAUNCHER_VARS)


def world(env: Mapping[str, str] | None = None) -> Comm:
    """The process group this process belongs to."""
    return MPIComm() if launched_by_mpi(os.environ if env is None else env) else SoloComm()
