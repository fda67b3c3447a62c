"""The state machine: every legal transition allowed, every other one refused."""

from __future__ import annotations

import itertools

import pytest

from psik.errors import IllegalTransition
from psik.models import JobState as S
from psik.states import check_transition, legal_next

# Written out by hand from the contract (DESIGN.md 3.2, issues 3 and 8), not derived from
# code. Issue 8: a job the scheduler refused is failed from new; one that vanished before
# starting (reconciler) is failed from queued.
LEGAL_SAME_RUN = {
    (S.new, S.queued),
    (S.new, S.failed),
    (S.queued, S.active),
    (S.queued, S.canceled),
    (S.queued, S.failed),
    (S.active, S.completed),
    (S.active, S.failed),
    (S.active, S.canceled),
}
FINAL = {S.completed, S.failed, S.canceled}


def expected_legal(current: tuple[int, S] | None, jobndx: int, state: S) -> bool:
    if current is None:
        return (jobndx, state) == (1, S.new)
    ndx, cur = current
    if jobndx == ndx:
        return (cur, state) in LEGAL_SAME_RUN
    return cur in FINAL and jobndx == ndx + 1 and state is S.queued


CURRENTS = [None] + [(n, s) for n in (1, 2, 5) for s in S]


def _indices(cur: tuple[int, S] | None) -> set[int]:
    return {0, 1, 2, 3} | ({cur[0] - 1, cur[0], cur[0] + 1, cur[0] + 2} if cur else set())


CASES = [(cur, ndx, state) for cur in CURRENTS for ndx in _indices(cur) for state in S]


@pytest.mark.parametrize("current", CURRENTS, ids=str)
def test_every_transition_from(current):
    """From `current`, every (jobndx, state) nearby is accepted iff the contract allows it."""
    wrong = []
    for jobndx in sorted(_indices(current)):
        for state in S:
            try:
                check_transition(current, jobndx, state)
                accepted = True
            except IllegalTransition:
                accepted = False
            if accepted != expected_legal(current, jobndx, state):
                wrong.append((jobndx, state.value, "accepted" if accepted else "refused"))
    assert not wrong, f"from {current}: {wrong}"


def test_the_eight_legal_moves_and_restart_are_all_exercised():
    legal = {(c[1], s) for c, n, s in CASES if c and n == c[0] and expected_legal(c, n, s)}
    assert legal == LEGAL_SAME_RUN
    restarts = {c[1] for c, n, s in CASES if c and n == c[0] + 1 and expected_legal(c, n, s)}
    assert restarts == FINAL


@pytest.mark.parametrize("current", CURRENTS, ids=str)
def test_legal_next_lists_exactly_the_allowed(current):
    listed = set(legal_next(current))
    base = current[0] if current else 1
    candidates = itertools.product(range(max(0, base - 1), base + 3), S)
    allowed = {(n, s) for n, s in candidates if expected_legal(current, n, s)}
    assert listed == allowed


def test_messages_name_both_states():
    with pytest.raises(IllegalTransition, match="completed -> active"):
        check_transition((1, S.completed), 1, S.active)
    with pytest.raises(IllegalTransition, match="jobndx 3"):
        check_transition((1, S.failed), 3, S.queued)
