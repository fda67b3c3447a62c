"""The job state machine as a pure function over (current status, requested status)."""

from __future__ import annotations

from .errors import IllegalTransition
from .models import JobState

_NEXT: dict[JobState, frozenset[JobState]] = {
    # new -> failed: the scheduler refused the job; queued -> failed: it vanished unstarted
    JobState.new: frozenset({JobState.queued, JobState.failed}),
    JobState.queued: frozenset({JobState.active, JobState.canceled, JobState.failed}),
    JobState.active: frozenset({JobState.completed, JobState.failed, JobState.canceled}),
    JobState.completed: frozenset(),
    JobState.failed: frozenset(),
    JobState.canceled: frozenset(),
}


def check_transition(current: tuple[int, JobState] | None, jobndx: int, state: JobState) -> None:
    """Raise IllegalTransition unless moving from `current` to (`jobndx`, `state`) is legal.

    `current` is the (jobndx, state) of the last row, or None for a job with no rows yet,
    whose only legal first row is (1, new). Within one jobndx the states follow
    new -> queued -> active -> completed | failed | canceled, queued -> canceled | failed
    and new -> failed (refused by the scheduler).
    A final job restarts as (jobndx + 1, queued).
    """
    if current is None:
        if (jobndx, state) == (1, JobState.new):
            return
        raise IllegalTransition(f"a new job must start as (1, new), not ({jobndx}, {state.value})")
    cur_ndx, cur_state = current
    if cur_state.final and jobndx == cur_ndx + 1 and state is JobState.queued:
        return
    if jobndx != cur_ndx:
        raise IllegalTransition(
            f"jobndx {jobndx} does not follow the current run {cur_ndx} ({cur_state.value})"
        )
    if state not in _NEXT[cur_state]:
        raise IllegalTransition(f"{cur_state.value} -> {state.value} is not allowed")


def legal_next(current: tuple[int, JobState] | None) -> list[tuple[int, JobState]]:
    """Every (jobndx, state) that may follow `current` (for documentation and tests)."""
    if current is None:
        return [(1, JobState.new)]
    ndx, state = current
    out = [(ndx, nxt) for nxt in JobState if nxt in _NEXT[state]]
    if state.final:
        out.append((ndx + 1, JobState.queued))
    return out
