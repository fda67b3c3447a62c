"""Reading and writing keys and certificates, with permission checks on private keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import CertifiedError
from .pki import PrivateKey, key_type_of


def write_private_key(path: Path, key: PrivateKey, *, overwrite: bool = False) -> None:
    """Write a PEM PKCS#8 key, created with mode 0600 (never readable by others)."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(path, data, 0o600, overwrite)


def write_pem(path: Path, text: str, *, overwrite: bool = False, mode: int = 0o644) -> None:
    """Write public PEM material (certificates, CRLs)."""
    _write_new(path, text.encode(), mode, overwrite)


def _write_new(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise CertifiedError(f"{path} exists (use --overwrite to replace it)")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def check_key_permissions(path: Path) -> None:
    """Refuse a private key that the group or others can read or write."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CertifiedError(f"private key {path} not found") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CertifiedError(
            f"private key {path} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):o});"
            f" fix with: chmod 600 {path}"
        )


def load_private_key(path: Path) -> PrivateKey:
    """Load an ed25519 or P-256 private key after checking it is private to its owner."""
    check_key_permissions(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except PermissionError:
        raise CertifiedError(f"private key {path} is not readable by this user") from None
    except (ValueError, TypeError) as exc:
        raise CertifiedError(f"private key {path} is corrupt or encrypted: {exc}") from None
    try:
        key_type_of(key)
    except CertifiedError as exc:
        raise CertifiedError(f"private key {path}: {exc}") from None
    return key


def load_certificate(path: Path) -> x509.Certificate:
    """Load one PEM certificate with a located error."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise CertifiedError(f"certificate {path} not found") from None
    except PermissionError:
        raise CertifiedError(f"certificate {path} is not readable by this user") from None
    except ValueError as exc:
        raise CertifiedError(f"certificate {path} is not a valid PEM certificate: {exc}") from None


def parse_certificate(text: str, where: str) -> x509.Certificate:
    """Parse PEM certificate text, naming `where` it came from on error."""
    try:
        return x509.load_pem_x509_certificate(text.encode())
    except ValueError as exc:
        raise CertifiedError(f"{where}: not a valid PEM certificate: {exc}") from None
