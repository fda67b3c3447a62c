"""Which consumer gets the next message: routing policies (pure).

An outlet that chooses consumers itself (acked delivery) asks its policy; NNG Push0 and
ZMQ PUSH outlets round-robin inside the library. Keyed routing (a policy that maps a
message's key to a consumer group) plugs in here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")


class RoutingPolicy(Protocol):
    def choose(self, ready: Sequence[T]) -> T:
        """One of `ready` (never empty): the consumer that gets the next message."""
        ...


class RoundRobin:
    """Each consumer in turn (over those ready now)."""

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, ready: Sequence[T]) -> T:
        self._turn += 1
        return ready[self._turn % len(ready)]
