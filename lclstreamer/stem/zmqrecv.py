"""The ZMQ receive path of `stem-count` (`--proto zmq`): one consumer group of a keyed
ZMQ OUT (`nngstream --route-by frame_number --out-proto zmq`, nngstream/zmqkeyed.py).

It offers what the consumer uses of nngstream's AckedConsumer (`messages()`, `release()`,
`info`, `end`, `duplicates`, `close()`), so the counting loop is the same for both
transports. The keyed ZMQ OUT has no redelivery: its acknowledgements are flow control,
sent as messages are taken, so `release` has nothing to do; part files still keep what a
killed rank had counted or parked, but what it had taken and not stored is lost (and
counted in the buffer's `lost_max`).
The NERSC wire format arrives as two parts (msgpack header, raw array), handed on as the
tuple of both (`wire.decode` takes either form); nothing is copied."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from nngstream.zmqkeyed import ZmqKeyedConsumer


class ZmqSectorConsumer:
    """One consumer group (an MPI rank) of a keyed ZMQ stream. At-most-once: no
    redelivery, so never a duplicate; what a group that left had taken is the buffer's
    `lost_max` (in the end message)."""

    duplicates = 0

    def __init__(self, url: str, *, dial_timeout: float, groups: int) -> None:
        self._consumer = ZmqKeyedConsumer(url, dial_timeout=dial_timeout, groups=groups)

    @property
    def info(self):  # noqa: ANN201 (nngstream.models.Info | None)
        return self._consumer.info

    @property
    def end(self):  # noqa: ANN201 (nngstream.models.EndOfStream | None)
        return self._consumer.end

    def messages(self, received: Callable[[], int]) -> Iterator[tuple[int, int, tuple]]:
        """(0, n, parts) per message: no producer envelope on ZMQ; n counts from 0."""
        for n, parts in enumerate(self._consumer.messages(received)):
            yield 0, n, tuple(parts)

    def release(self, n: int = 1) -> None:
        """Nothing to do: taken messages are acknowledged as they arrive (module doc)."""

    def close(self) -> None:
        self._consumer.close()
