"""The errors the CLIs turn into a single clear line (see `certified.cliutil`)."""


class CertifiedError(Exception):
    """A problem the user can fix (bad file, wrong permissions, unknown nickname...)."""

    exit_code = 1


class ConfigError(CertifiedError):
    """A configuration that cannot be found or read (a usage error: exit code 2)."""

    exit_code = 2
