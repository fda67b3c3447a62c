"""Pure signing policy: what subject a caller may get."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID

from certified.errors import CertifiedError
from certified.pki import subject_name


class PolicyError(CertifiedError):
    """The request is refused by policy (HTTP 403)."""


def user_subject(requested: x509.Name, sans: list[x509.GeneralName], login: str) -> x509.Name:
    """The subject to issue to `login`; refuses requests naming anyone else.

    The requested subject may be empty or name the caller (UID and/or CN equal to the
    login). User certificates carry no subjectAltName: they identify a person, not a host.
    """
    for oid, label in ((NameOID.USER_ID, "UID"), (NameOID.COMMON_NAME, "CN")):
        for attr in requested.get_attributes_for_oid(oid):
            if attr.value != login:
                raise PolicyError(
                    f"request names {label}={attr.value!r} but you are logged in as {login!r};"
                    " the signer only certifies the caller's own login"
                )
    others = [
        a.oid.dotted_string
        for a in requested
        if a.oid not in (NameOID.USER_ID, NameOID.COMMON_NAME)
    ]
    if others:
        raise PolicyError(f"request subject may only hold UID and CN, not {', '.join(others)}")
    if sans:
        raise PolicyError("user certificate requests must not carry subjectAltNames")
    return subject_name(login, uid=login)
