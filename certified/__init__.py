"""certified: ed25519 x.509 identities and mTLS for every HTTPS hop of the suite."""

from .errors import CertifiedError
from .identity import Certified

__all__ = ["Certified", "CertifiedError"]
