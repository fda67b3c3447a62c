"""nngstream's user-facing error."""


class NngstreamError(Exception):
    """Bad settings or an address that cannot be used; the message says which and why."""


class StreamBroken(NngstreamError):
    """A consumer lost the buffer before the end message: the stream did not complete."""
