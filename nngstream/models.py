"""nngstream's contracts (pydantic v2): buffer settings, the metrics record, and the
control messages consumers read (the end of stream). Other packages import these, never
the engine."""

from __future__ import annotations

import struct
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .fifo import WhenFull
from .lifecycle import State
from .sizes import parse_size


class Delivery(StrEnum):
    AT_MOST_ONCE = "at-most-once"  # Push0/PUSH round-robin; a consumer that dies loses what it held
    ACKED = "acked"  # credit and acknowledgements; unacknowledged messages are redelivered


class Proto(StrEnum):
    NNG = "nng"  # NNG Pull0 on IN, Push0 on OUT
    ZMQ = "zmq"  # ZMQ PULL on IN, PUSH on OUT


_SCHEMES: dict[Proto, tuple[str, ...]] = {
    Proto.NNG: ("tcp", "tcp4", "tcp6", "ipc", "inproc"),
    Proto.ZMQ: ("tcp", "ipc", "inproc"),
}


def check_url(url: str, proto: Proto | str) -> str:
    """Return `url` if `proto` can use it, else raise ValueError saying why."""
    proto = Proto(proto)
    parts = urlsplit(url)
    allowed = _SCHEMES[proto]
    if "://" not in url or parts.scheme not in allowed:
        raise ValueError(
            f"invalid {proto.value} address {url!r}: expected "
            + " or ".join(f"{s}://..." for s in allowed)
        )
    if parts.scheme.startswith("tcp"):
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise ValueError(
                f"invalid address {url!r}: tcp needs HOST:PORT, e.g. tcp://0.0.0.0:5000"
            )
        if parts.path not in ("", "/"):
            raise ValueError(f"invalid address {url!r}: a tcp address has no path")
    elif len(url) <= len(parts.scheme) + 3:
        raise ValueError(f"invalid address {url!r}: {parts.scheme} needs a path or name")
    return url


ByteSize = Annotated[int, Field(ge=1)]


class BufferSettings(BaseModel):
    """Everything one buffer needs; the CLI options map one to one."""

    model_config = ConfigDict(extra="forbid")

    in_proto: Proto = Proto.NNG
    out_proto: Proto = Proto.NNG
    in_url: str = Field(description="where producers connect (or, with dial_in, what to dial)")
    out_url: str = Field(description="where consumers connect (or, with dial_out, what to dial)")
    max_bytes: ByteSize = Field(default=1024**3, description="bound on buffered bytes")
    max_messages: int = Field(default=100_000, ge=1, description="bound on buffered messages")
    when_full: WhenFull = WhenFull.BLOCK
    delivery: Delivery = Delivery.AT_MOST_ONCE
    metrics_interval: float = Field(default=10.0, gt=0, description="seconds between reports")
    callback: str | None = Field(default=None, description="URL receiving signed metrics")
    cb_secret: str | None = Field(default=None, description="HMAC-SHA256 key for callbacks")
    certified_config: Path | None = Field(
        default=None, description="certified config dir: the callback's mTLS identity"
    )
    idle_timeout: float | None = Field(
        default=None,
        gt=0,
        description="fail when no producer connects, or nothing drains, for this long",
    )
    producers: int | None = Field(
        default=None,
        ge=1,
        description="end the stream only after this many producer connections were made and"
        " all have left (e.g. the MPI rank count); default: when all that came have left",
    )
    dial_in: bool = False
    in_delivery: Delivery = Field(
        default=Delivery.AT_MOST_ONCE,
        description="with dial_in: `acked` when IN_URL is the OUT of a buffer with"
        " --delivery acked or --route-by (this buffer is then one of its consumers; with"
        " --in-proto zmq, one consumer group of a keyed ZMQ OUT)",
    )
    dial_out: bool = False
    linger: float = Field(
        default=5.0,
        ge=0,
        description="seconds without progress after which a delivery that can no longer be"
        " confirmed (a consumer vanished with a message in flight) is given up",
    )
    dial_timeout: float = Field(default=10.0, gt=0, description="first connection when dialing")
    end_timeout: float = Field(
        default=60.0,
        gt=0,
        description="at the end, seconds without a consumer leaving (each leaves at its end"
        " message) after which the buffer closes anyway",
    )
    spill: Path | None = Field(
        default=None,
        description="directory for spill segments: when the memory bound is reached,"
        " messages wait on disk (in order) instead of blocking producers",
    )
    spill_max_bytes: ByteSize = Field(
        default=100 * 1024**3, description="bound on the payload bytes held in the spill"
    )
    ready_file: Path | None = Field(
        default=None,
        description="written (JSON: in_url, out_url, pid) once both sides listen or are dialed,"
        " with the actual addresses (a tcp port 0 is replaced by the port chosen)",
    )
    route_by: str | None = Field(
        default=None,
        description="keyed routing: the integer field of each message's msgpack header whose"
        " value picks the consumer group (key mod groups connected); an NNG OUT needs an"
        " NNG IN; a ZMQ OUT (ROUTER) takes the key from a message's first part",
    )

    @field_validator("max_bytes", "spill_max_bytes", mode="before")
    @classmethod
    def _size(cls, value: object) -> int:
        if isinstance(value, str | int) and not isinstance(value, bool):
            return parse_size(value)
        raise ValueError(f"invalid size {value!r}")

    @field_validator("in_url", "out_url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        proto = info.data.get("in_proto" if info.field_name == "in_url" else "out_proto")
        return check_url(value, proto) if proto is not None else value

    @model_validator(mode="after")
    def _check(self) -> BufferSettings:
        if self.callback is not None:
            parts = urlsplit(self.callback)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"invalid callback URL {self.callback!r} (--callback): expected http(s)://HOST/..."
                )
            if not self.cb_secret:
                raise ValueError("callback (--callback) needs cb_secret (--cb-secret) to sign")
        elif self.cb_secret is not None:
            raise ValueError("cb_secret (--cb-secret) given without a callback (--callback)")
        if self.certified_config is not None and self.callback is None:
            raise ValueError("certified_config (--certified-config) is only used for --callback")
        if self.certified_config is not None:  # `~/...`: the home of the account it runs as
            self.certified_config = self.certified_config.expanduser()
        if (
            not self.dial_in
            and not self.dial_out
            and self.in_url == self.out_url
            and not self.in_url.rstrip("/").endswith(":0")
        ):
            raise ValueError("IN and OUT cannot listen on the same address")
        if self.delivery is Delivery.ACKED and (
            self.in_proto is not Proto.NNG or self.out_proto is not Proto.NNG or self.dial_out
        ):
            raise ValueError(
                "--delivery acked needs NNG on both sides (--in-proto nng --out-proto nng)"
                " and a listening OUT (no --dial-out)"
            )
        if self.in_delivery is Delivery.ACKED and not self.dial_in:
            raise ValueError("--in-delivery acked needs --dial-in")
        if self.route_by is not None and self.dial_out:
            raise ValueError("--route-by needs a listening OUT (no --dial-out)")
        if (
            self.route_by is not None
            and self.out_proto is Proto.NNG
            and self.in_proto is not Proto.NNG
        ):
            raise ValueError(
                "--route-by with an NNG OUT needs an NNG IN (--in-proto nng); a ZMQ IN"
                " routes keys on a ZMQ OUT (--out-proto zmq)"
            )
        if self.spill is not None and self.when_full is not WhenFull.BLOCK:
            raise ValueError(
                "--spill keeps every message: it cannot be combined with --when-full"
                f" {self.when_full.value}"
            )

        return self


class Metrics(BaseModel):
    """One report: a JSON line on stdout and, with a callback, a signed POST body."""

    model_config = ConfigDict(extra="forbid")

    time: float = Field(description="UNIX time in seconds")
    state: State
    producers: int = Field(description="producers connected now")
    consumers: int = Field(description="consumers connected now")
    recvd: int = Field(description="messages received from producers")
    sent: int = Field(description="messages handed to consumers")
    dropped: int = Field(description="messages discarded by a drop policy")
    buffered: int = Field(description="messages held now")
    buffered_bytes: int = Field(description="bytes held now")
    bytes_in: int
    bytes_out: int
    rate_in: float = Field(description="bytes/s received over the last interval")
    rate_out: float = Field(description="bytes/s sent over the last interval")
    lost_max: int = Field(
        default=0,
        description="upper bound on messages lost: handed to consumers that vanished before"
        " the end of the stream (NNG: what their connections carried; ZMQ: what was sent while"
        " they were connected), plus deliveries the outlet could not confirm",
    )
    blocked: bool = Field(
        default=False,
        description="producers are held back: the buffer is full and no consumer is connected",
    )
    redelivered: int = Field(
        default=0, description="acked delivery: messages taken back from consumers that left"
    )
    spilled: int = Field(default=0, description="messages written to the spill so far")
    spilled_bytes: int = Field(default=0, description="payload bytes written to the spill")
    spill_held: int = Field(default=0, description="messages in the spill now")
    in_url: str = Field(default="", description="the IN address actually in use")
    out_url: str = Field(default="", description="the OUT address actually in use")


# -- control messages -------------------------------------------------------------------
CONTROL_PREFIX = b"\x00NNGSTREAM\x00"
"""A message starting with these 11 bytes is a control message from the buffer (its JSON
body follows the prefix), never data. Producers must not send messages starting so."""
CONTROL_MAX = 1 << 20  # control messages are smaller than this; larger messages are data


class ProducerTotals(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: int
    bytes: int


class EndOfStream(BaseModel):
    """The last message a consumer receives from a stream that ended normally.

    A consumer that loses its connection to the buffer before receiving one knows the
    stream broke. The totals are the whole stream's (every consumer gets the same)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["end"] = "end"
    recvd: int = Field(description="messages the buffer received from producers")
    sent: int = Field(description="messages the buffer handed to consumers (all of them)")
    bytes: int = Field(description="payload bytes handed to consumers")
    dropped: int = Field(description="messages discarded by a drop policy")
    lost_max: int = Field(description="upper bound on messages lost (see Metrics.lost_max)")
    redelivered: int = Field(default=0, description="acked delivery: messages redelivered")
    producers: dict[str, ProducerTotals] = Field(
        default_factory=dict,
        description="messages and bytes received per producer connection (NNG pipe id);"
        " empty with a ZMQ IN, which does not say which connection a message came from",
    )


class Credit(BaseModel):
    """Acked delivery, consumer -> buffer: hold at most `credit` unacknowledged messages."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["credit"] = "credit"
    credit: int = Field(ge=1)
    groups: int | None = Field(
        default=None,
        ge=1,
        description="keyed routing: this consumer is one of `groups` groups of one job; the"
        " buffer routes keyed messages only once that many groups are connected",
    )


class Ack(BaseModel):
    """Acked delivery, consumer -> buffer: `n` more messages processed (in arrival order)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["ack"] = "ack"
    n: int = Field(ge=1)


class Info(BaseModel):
    """Keyed routing, buffer -> each consumer group, just before the end message: how many
    data messages this group was given (and acknowledged) in the whole stream, so a
    consumer can tell that nothing of its share is still missing before it finishes
    incomplete frames."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["info"] = "info"
    route_by: str = Field(description="the header field the messages were routed by")
    expected: int = Field(ge=0, description="data messages this group acknowledged")
    groups: int = Field(ge=1, description="consumer groups connected at the end")


ENVELOPE = struct.Struct("<QQ")
"""Acked delivery: what precedes each data message's payload: producer connection id
and that producer's sequence number (from 0), little-endian u64s."""

_ConsumerControl = TypeAdapter(Annotated[Credit | Ack, Field(discriminator="type")])


def decode_consumer_control(data: bytes | memoryview) -> Credit | Ack:
    """A consumer's credit or ack message (ValueError if `data` is neither)."""
    if not is_control(data):
        raise ValueError("not an nngstream control message")
    try:
        return _ConsumerControl.validate_json(bytes(data[len(CONTROL_PREFIX) :]))
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


def encode_control(message: EndOfStream | Credit | Ack | Info) -> bytes:
    """The bytes of a control message on the wire."""
    return CONTROL_PREFIX + message.model_dump_json().encode()


def is_control(data: bytes | memoryview) -> bool:
    return len(data) < CONTROL_MAX and data[: len(CONTROL_PREFIX)] == CONTROL_PREFIX


def decode_control(data: bytes | memoryview) -> EndOfStream:
    """The control message in `data` (ValueError if it is none or malformed)."""
    if not is_control(data):
        raise ValueError("not an nngstream control message")
    try:
        return EndOfStream.model_validate_json(bytes(data[len(CONTROL_PREFIX) :]))
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


def decode_info(data: bytes | memoryview) -> Info | None:
    """The info message in `data`, or None if `data` is another control message."""
    if not is_control(data):
        raise ValueError("not an nngstream control message")
    try:
        return Info.model_validate_json(bytes(data[len(CONTROL_PREFIX) :]))
    except ValidationError:
        return None
