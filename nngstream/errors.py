"""nngstream's user-facing error."""


class NngstreamError(Exception):
    """Bad settings or an address that cannot be used; the message says which and why."""
