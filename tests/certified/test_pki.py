"""Pure x.509 construction: CA constraints, leaf usages, SANs, identities, CSRs."""

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from certified.errors import CertifiedError
from certified.pki import (
    build_crl,
    ca_certificate,
    general_names,
    identity_of,
    issue_certificate,
    make_csr,
    new_key,
    parse_request,
    pem,
    subject_name,
    utcnow,
)


def test_ca_is_path_length_zero_and_self_signed():
    key = new_key()
    ca = ca_certificate(key, "facility")
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)


def test_leaf_has_both_usages_and_sans():
    ca_key, key = new_key(), new_key()
    ca = ca_certificate(ca_key, "facility")
    sans = general_names(["127.0.0.1", "psik.example.org"], ["a@b.org"], ["https://x"])
    leaf = issue_certificate(ca_key, ca, key.public_key(), subject_name("psik"), sans=sans)
    leaf.verify_directly_issued_by(ca)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["psik.example.org"]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_identity_prefers_uid_then_cn():
    ca_key = new_key()
    ca = ca_certificate(ca_key, "signer")
    user = issue_certificate(ca_key, ca, new_key().public_key(), subject_name("alice", uid="alice"))
    svc = issue_certificate(ca_key, ca, new_key().public_key(), subject_name("psik"))
    assert identity_of(user) == "uid:alice"
    assert identity_of(svc) == "cn:psik"


def test_csr_roundtrip_and_rejections():
    key = new_key()
    csr = make_csr(key, subject_name("bob", uid="bob"))
    pub, subject, sans = parse_request(pem(csr).encode())
    assert pub.public_bytes_raw() == key.public_key().public_bytes_raw()
    assert subject == subject_name("bob", uid="bob") and sans == []
    with pytest.raises(CertifiedError, match="expected a PEM"):
        parse_request(b"hello")
    with pytest.raises(CertifiedError, match="malformed"):
        parse_request(
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        )
    ec_key = ec.generate_private_key(ec.SECP384R1())  # P-384: neither accepted type
    ec_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject_name("x"))
        .sign(
            ec_key,
            __import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256(),
        )
    )
    with pytest.raises(CertifiedError, match="ed25519"):
        parse_request(pem(ec_csr).encode())


def test_crl_lists_serials_and_verifies():
    ca_key = new_key()
    ca = ca_certificate(ca_key, "signer")
    crl = build_crl(ca_key, ca, [(1234, utcnow())])
    assert crl.is_signature_valid(ca.public_key())
    assert crl.get_revoked_certificate_by_serial_number(1234) is not None
    assert crl.get_revoked_certificate_by_serial_number(99) is None


def test_a_trusted_ca_vouches_only_for_what_it_was_trusted_as():
    from certified.trust import ClientCA, client_identity_of

    signer_key, client_key, stranger_key = new_key(), new_key(), new_key()
    signer = ClientCA("signer", ca_certificate(signer_key, "signer"), users=True)
    client = ClientCA("client", ca_certificate(client_key, "client"))
    stranger_ca = ca_certificate(stranger_key, "client")  # same subject, different key
    cas = [signer, client]

    def leaf(key, ca, subject):
        return issue_certificate(key, ca, new_key().public_key(), subject)

    assert client_identity_of(leaf(signer_key, signer.cert, subject_name("al", uid="al")), cas) == (
        "uid:al"
    )
    assert client_identity_of(leaf(client_key, client.cert, subject_name("client")), cas) == (
        "cn:client"
    )
    # The client's CA minting someone else's names gets them namespaced, never bare.
    assert client_identity_of(leaf(client_key, client.cert, subject_name("server")), cas) == (
        "cn:server@client"
    )
    forged_user = leaf(client_key, client.cert, subject_name("al", uid="al"))
    assert client_identity_of(forged_user, cas) == "uid:al@client"
    assert client_identity_of(leaf(signer_key, signer.cert, subject_name("svc")), cas) == (
        "cn:svc@signer"
    )
    # A look-alike CA (same subject, other key) is nobody's issuer.
    assert client_identity_of(leaf(stranger_key, stranger_ca, subject_name("client")), cas) is None


def test_revoked_certificate_cannot_open_a_websocket():
    """The middleware's check covers websocket scopes too (driven directly as ASGI)."""
    import asyncio

    from certified.asgi import CertifiedMiddleware

    class Revoked:
        def is_revoked(self, issuer, serial):
            return (issuer, serial) == ("CN=x CA", 7)

    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope["type"])

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    tls = {"client_serial": 7, "client_issuer": "CN=x CA", "client_identity": "cn:x"}
    scope = {"type": "websocket", "extensions": {"tls": tls}}
    asyncio.run(CertifiedMiddleware(app, Revoked())(scope, receive, send))
    assert reached == [] and sent == [
        {"type": "websocket.close", "code": 1008, "reason": "certificate revoked"}
    ]
    tls["client_serial"] = 8
    asyncio.run(CertifiedMiddleware(app, Revoked())(scope, receive, send))
    assert reached == ["websocket"]


def test_access_line_is_written_when_the_response_is_complete_not_after_background_work():
    """A client holding its response can rely on the access line: it is written before
    the last body chunk is sent, while the app (a background task) still runs. A request
    whose app fails before answering still gets its one line, with status 500."""
    import asyncio
    import logging

    from certified.asgi import CertifiedMiddleware

    lines: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lines.append
    log = logging.getLogger("certified.access")
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.INFO)
    seen_at_last_chunk: list[int] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
        assert len(lines) == 1  # the background work has not finished: the line is there
        await asyncio.sleep(0.05)

    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    async def send(message):
        if message["type"] == "http.response.body":
            seen_at_last_chunk.append(len(lines))

    async def receive():
        return {"type": "http.request", "body": b""}

    tls = {"client_identity": "cn:x"}
    scope = {"type": "http", "method": "POST", "path": "/transfers", "extensions": {"tls": tls}}
    try:
        asyncio.run(CertifiedMiddleware(app)(scope, receive, send))
        assert seen_at_last_chunk == [1] and len(lines) == 1
        assert (lines[0].status, lines[0].path, lines[0].client_identity) == (
            201, "/transfers", "cn:x")  # fmt: skip
        assert lines[0].duration_ms < 50  # the background sleep is not counted
        with pytest.raises(RuntimeError, match="boom"):
            asyncio.run(CertifiedMiddleware(broken)(scope, receive, send))
        assert len(lines) == 2 and lines[1].status == 500
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
