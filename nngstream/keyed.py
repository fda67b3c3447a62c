"""Keyed routing (pure): the key in a message's msgpack header, and the group it goes to.

A keyed message starts with a msgpack map (the header) and may carry anything after it
(a raw array: the two-part message of a 4D camera's sector, as one NNG message). The
buffer reads the integer `field` of that map (on ZMQ, of the message's first part) and
sends the message to consumer group `key mod groups`, the groups being the consumers
connected now, in the order they connected (acked.py for NNG, zmqkeyed.py for ZMQ).
Every message with the same key therefore meets on one group while the set of groups
does not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import msgpack

from .errors import NngstreamError

T = TypeVar("T")

HEADER_MAX = 4096  # a keyed message's header must fit in its first 4 KiB


class Unroutable(NngstreamError):
    """A message whose routing key cannot be read (counted, then refused)."""


def routing_key(body: memoryview | bytes, field: str) -> int:
    """The integer `field` of the msgpack map that starts `body` (copies at most 4 KiB)."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=HEADER_MAX)
    unpacker.feed(body[:HEADER_MAX])
    try:
        header = unpacker.unpack()
    except (msgpack.OutOfData, ValueError, msgpack.UnpackException) as exc:
        raise Unroutable(
            f"keyed routing: message of {len(body)} bytes does not start with a msgpack"
            f" header of at most {HEADER_MAX} bytes ({type(exc).__name__})"
        ) from None
    if not isinstance(header, dict):
        raise Unroutable(f"keyed routing: message header is a {type(header).__name__}, not a map")
    key = header.get(field)
    if not isinstance(key, int) or isinstance(key, bool):
        raise Unroutable(f"keyed routing: message header has no integer field {field!r}")
    return key


def assembled(announced: Sequence[int]) -> bool:
    """Whether the groups connected (each saying how many groups its job has) are all of
    their job's: until then keys are not routed, so they spread over the whole job."""
    return bool(announced) and len(announced) >= max(announced)


def group_for(key: int, groups: Sequence[T]) -> T:
    """The group (of `groups`, never empty, in connection order) that key `key` goes to."""
    return groups[key % len(groups)]
