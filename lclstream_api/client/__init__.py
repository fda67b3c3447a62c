"""The user's side of lclstream-api: `lclstream` CLI and the Python API (never imports
the service; shares lclstream_api.models).

    from lclstream_api.client import stream, pull, Client
    for batch in stream("stream.yaml", producers=2, cache="~/lclstream-cache"):
        frames = batch["frames"]          # numpy, events along axis 0
"""

from .api import Client
from .cache import Cache
from .decode import DECODERS, Batch, decoder_for
from .errors import (
    CacheError,
    ClientError,
    DecodeError,
    ServerError,
    StreamBroken,
    TransferFailed,
)
from .pull import Pull, Received, pull
from .stream import Stream, stream

__all__ = [
    "DECODERS", "Batch", "Cache", "CacheError", "Client", "ClientError", "DecodeError",
    "Pull", "Received", "ServerError", "Stream", "StreamBroken", "TransferFailed",
    "decoder_for", "pull", "stream",
]  # fmt: skip
