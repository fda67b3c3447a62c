"""nngstream: a bounded, zero-copy message buffer between many producers and many
consumers, over NNG (Push0/Pull0) or ZMQ (PUSH/PULL)."""

from .engine import Buffer
from .errors import NngstreamError
from .fifo import WhenFull
from .lifecycle import State
from .models import BufferSettings, Metrics, Proto

__all__ = ["Buffer", "BufferSettings", "Metrics", "NngstreamError", "Proto", "State", "WhenFull"]
