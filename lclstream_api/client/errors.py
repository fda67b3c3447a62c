"""The client's exception family: every error is one line saying what and where."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of every error `lclstream_api.client` raises on purpose."""


class ServerError(ClientError):
    """The server refused or could not be reached; the message is its reason."""


class DecodeError(ClientError):
    """A message is not a batch of the serializer the configuration names."""


class StreamBroken(ClientError):
    """A buffer went away without its end message; `received` says what arrived."""

    def __init__(self, message: str, received: dict[str, Any]) -> None:
        self.received = received
        super().__init__(f"{message} (received: {received})")


class TransferFailed(ClientError):
    """The transfer ended `failed` (or `canceled` by someone else); `detail` is its record."""

    def __init__(self, message: str, detail: Any = None) -> None:
        self.detail = detail
        super().__init__(message)


class CacheError(ClientError):
    """A cache entry is missing, unreadable or corrupted; the message names the file."""
