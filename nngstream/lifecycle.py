"""The buffer's lifecycle as pure functions: which event an observation means, and
which state an event leads to.

    waiting --producer joined--> streaming --producers gone / stop--> draining --drained--> done
    waiting --stop--> draining;  waiting / draining --idle timeout--> failed
    any non-final state --abort / error--> failed
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    WAITING = "waiting"  # no producer has connected yet
    STREAMING = "streaming"  # producers connected, messages flow
    DRAINING = "draining"  # no new producers: delivering what is held
    DONE = "done"  # everything held was delivered; exit 0
    FAILED = "failed"  # aborted, timed out or broke; exit 1

    @property
    def final(self) -> bool:
        return self in (State.DONE, State.FAILED)


class Event(StrEnum):
    PRODUCER_JOINED = "producer-joined"
    PRODUCERS_GONE = "producers-gone"  # every producer that connected has disconnected
    STOP = "stop"  # first SIGTERM / Buffer.stop(): drain, then exit
    DRAINED = "drained"  # input closed, queue empty, output flushed
    IDLE_TIMEOUT = "idle-timeout"
    ABORT = "abort"  # second SIGTERM / Buffer.abort(): exit at once
    ERROR = "error"


_TABLE: dict[tuple[State, Event], State] = {
    (State.WAITING, Event.PRODUCER_JOINED): State.STREAMING,
    (State.WAITING, Event.STOP): State.DRAINING,
    (State.WAITING, Event.IDLE_TIMEOUT): State.FAILED,
    (State.STREAMING, Event.PRODUCERS_GONE): State.DRAINING,
    (State.STREAMING, Event.STOP): State.DRAINING,
    (State.DRAINING, Event.DRAINED): State.DONE,
    (State.DRAINING, Event.IDLE_TIMEOUT): State.FAILED,
}


def transition(state: State, event: Event) -> State:
    """The state after `event`; events that do not apply leave the state unchanged."""
    if state.final:
        return state
    if event in (Event.ABORT, Event.ERROR):
        return State.FAILED
    return _TABLE.get((state, event), state)


@dataclass(frozen=True)
class Observation:
    """What the engine sees at one instant."""

    producers: int  # producers connected now
    producer_seen: bool  # at least one producer connected (or an upstream said end)
    stop_requested: bool
    abort_requested: bool
    output_finished: bool  # input closed, queue empty and the output side flushed
    idle_for: float  # seconds without progress that the idle timeout applies to
    idle_timeout: float | None
    error: bool = False
    producers_joined: int = 0  # producer connections ever made
    producers_expected: int | None = None  # end only after this many have joined


def next_event(state: State, obs: Observation) -> Event | None:
    """The event, if any, that `obs` means in `state` (the most urgent first)."""
    if state.final:
        return None
    if obs.error:
        return Event.ERROR
    if obs.abort_requested:
        return Event.ABORT
    idle = obs.idle_timeout is not None and obs.idle_for >= obs.idle_timeout
    if state is State.WAITING:
        if obs.stop_requested:
            return Event.STOP
        if obs.producers > 0 or obs.producer_seen:
            return Event.PRODUCER_JOINED
        return Event.IDLE_TIMEOUT if idle else None
    if state is State.STREAMING:
        if obs.stop_requested:
            return Event.STOP
        enough = obs.producers_expected is None or obs.producers_joined >= obs.producers_expected
        gone = obs.producers == 0 and obs.producer_seen and enough
        return Event.PRODUCERS_GONE if gone else None
    # draining
    if obs.output_finished:
        return Event.DRAINED
    return Event.IDLE_TIMEOUT if idle else None
