"""certified: x.509 identities (ed25519, or ECDSA P-256 for browsers) and mTLS for every
HTTPS hop of the suite."""

from .errors import CertifiedError
from .identity import Certified

__all__ = ["Certified", "CertifiedError"]
