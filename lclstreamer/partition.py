"""Deterministic assignment of events to ranks (pure functions)."""

from __future__ import annotations


def owner(index: int, size: int) -> int:
    """The rank that handles global event `index` under round-robin partitioning."""
    return index % size


def rank_indices(n_events: int, rank: int, size: int) -> range:
    """Global indices of the events `rank` handles among `n_events` (round-robin)."""
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in a job of {size} ranks")
    return range(rank, max(n_events, 0), size)


def limit(n_events: int, max_events: int | None) -> int:
    """Events to process when a run of `n_events` is capped at `max_events` (None: no cap)."""
    return n_events if max_events is None else min(n_events, max_events)


def blocks(indices: range, block: int) -> list[range]:
    """Split a stepped range into consecutive sub-ranges of at most `block` indices."""
    return [indices[i : i + block] for i in range(0, len(indices), block)]
