"""Per-producer sequence accounting at a consumer (pure): gaps, duplicates, order.

Messages that say who produced them and their sequence number (lclstreamer's HDF5
batches carry root attributes `rank` and `seq`; acked delivery's envelope carries the
producer connection and sequence) let a consumer find what it did not receive. With
several consumers on one stream, the messages the others received are gaps too:
compare with the end message's totals.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

MAX_LISTED = 10  # missing sequence numbers listed per producer in a report


@dataclass
class SequenceCheck:
    seen: dict[int, set[int]] = field(default_factory=dict)
    last: dict[int, int] = field(default_factory=dict)
    duplicates: int = 0
    out_of_order: int = 0

    def add(self, producer: int, seq: int) -> None:
        got = self.seen.setdefault(producer, set())
        if seq in got:
            self.duplicates += 1
            return
        if seq < self.last.get(producer, -1):
            self.out_of_order += 1
        got.add(seq)
        self.last[producer] = max(seq, self.last.get(producer, -1))

    def gaps(self) -> int:
        """Sequence numbers missing below each producer's highest one seen."""
        return sum(max(s) + 1 - len(s) for s in self.seen.values() if s)

    def report(self) -> dict[str, Any]:
        producers = {}
        for p, s in sorted(self.seen.items()):
            missing = [i for i in range(max(s) + 1) if i not in s] if s else []
            producers[str(p)] = {
                "messages": len(s),
                "highest": max(s) if s else None,
                "gaps": len(missing),
                "missing": missing[:MAX_LISTED],
            }
        return {
            "producers": producers,
            "gaps": self.gaps(),
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
        }


def hdf5_rank_seq(payload: bytes | memoryview) -> tuple[int, int]:
    """(rank, seq) from an HDF5 batch message's root attributes (ValueError if absent)."""
    import h5py

    try:
        with h5py.File(io.BytesIO(payload), "r") as f:
            return int(f.attrs["rank"]), int(f.attrs["seq"])
    except (OSError, KeyError) as exc:
        raise ValueError(f"not an HDF5 batch with rank and seq attributes: {exc}") from None
