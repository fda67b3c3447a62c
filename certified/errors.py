"""The one error type the CLIs turn into a single clear line."""


class CertifiedError(Exception):
    """A problem the user can fix (bad file, wrong permissions, unknown nickname...)."""
