"""Errors shown to the user as one clear message (never a traceback)."""

from __future__ import annotations


class LclstreamerError(Exception):
    """Base of every error that is reported to the user as plain text."""

    exit_code = 1


class ConfigError(LclstreamerError):
    """The configuration file is missing, unreadable, not YAML or not valid."""

    exit_code = 2


class SourceError(LclstreamerError):
    """An event source could not be opened or read (missing file, no psana, ...)."""


class DataError(LclstreamerError):
    """Event data do not fit the configuration (missing field, shape change, ...)."""


class HandlerError(LclstreamerError):
    """A data handler could not deliver a message (socket, file system)."""


class PeerLost(HandlerError):
    """A socket handler had no peer (the buffer) for longer than its `peer_timeout`."""
