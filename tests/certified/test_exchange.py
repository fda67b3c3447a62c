"""Exchange formats: PEM and upstream's url-safe base64 DER / JSON, read by every command."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from certified import exchange
from certified.errors import CertifiedError

pytestmark = pytest.mark.timeout(60)


def run(*args, check=True):
    out = subprocess.run(["certified", *map(str, args)], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    if check:
        assert out.returncode == 0, out.stderr
    return out


def one_line_error(out, needle):
    assert out.returncode != 0 and "Traceback" not in out.stderr
    err = out.stderr.strip()
    assert err.startswith("certified: error: ") and needle in err, err
    assert len(err.splitlines()) == 1, err


@pytest.fixture
def pair(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run("init", "alpha", "--config", a)
    run("init", "beta", "--host", "127.0.0.1", "--config", b)
    return a, b


def test_every_form_of_a_certificate_reads_the_same(pair, tmp_path):
    _a, b = pair
    pem = (b / "CA.crt").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    forms = {
        "pem": pem,
        "urlsafe": base64.b64encode(der, altchars=b"-_") + b"\n",
        "standard": base64.encodebytes(der),  # wrapped lines, + and /
        "get-signer json": json.dumps({"ca_cert": exchange.to_b64(cert)}).encode(),
        "introduce json (ours, PEM)": json.dumps({"ca_cert": pem.decode()}).encode(),
    }
    for name, data in forms.items():
        assert exchange.read_certificate(data, name) == cert, name


def test_get_ident_and_get_signer_both_formats(pair):
    _a, b = pair
    ident = run("get-ident", "--format", "upstream", "--config", b).stdout.strip()
    assert "\n" not in ident and "+" not in ident and "/" not in ident
    assert exchange.read_certificate(ident.encode(), "ident").subject.rfc4514_string() == "CN=beta"
    assert run("get-ident", "--config", b).stdout.startswith("-----BEGIN CERTIFICATE-----")
    signer = json.loads(run("get-signer", "--format", "upstream", "--config", b).stdout)
    assert set(signer) == {"ca_cert"}
    assert run("get-signer", "--config", b).stdout == (b / "CA.crt").read_text()


def test_introduce_reads_upstream_ident_and_csr_and_writes_both_formats(pair, tmp_path):
    a, b = pair
    ident = tmp_path / "b.b64"
    ident.write_text(run("get-ident", "--format", "upstream", "--config", b).stdout)
    up = json.loads(run("introduce", ident, "--format", "upstream", "--config", a).stdout)
    signed = exchange.read_certificate(up["signed_cert"].encode(), "signed")
    ca = exchange.read_certificate(up["ca_cert"].encode(), "ca")
    signed.verify_directly_issued_by(ca)
    assert signed.subject.rfc4514_string() == "CN=beta"
    assert ca == x509.load_pem_x509_certificate((a / "CA.crt").read_bytes())
    pem = json.loads(run("introduce", ident, "--config", a).stdout)
    assert pem["signed_cert"].startswith("-----BEGIN CERTIFICATE-----")

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gamma")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, None)
    der = csr.public_bytes(serialization.Encoding.DER)
    (tmp_path / "csr.b64").write_bytes(base64.b64encode(der, altchars=b"-_"))
    got = json.loads(run("introduce", tmp_path / "csr.b64", "--config", a).stdout)
    signed = x509.load_pem_x509_certificate(got["signed_cert"].encode())
    assert signed.subject.rfc4514_string() == "CN=gamma"


def test_add_client_and_add_service_take_upstream_documents(pair, tmp_path):
    a, b = pair
    doc = tmp_path / "signer.json"
    doc.write_text(run("get-signer", "--format", "upstream", "--config", b).stdout)
    run("add-client", "beta", doc, "--config", a)
    run("add-service", "beta", "https://127.0.0.1:9999", doc, "--config", a)
    assert (a / "known_clients" / "beta.crt").read_bytes() == (b / "CA.crt").read_bytes()
    entry = json.loads((a / "known_servers" / "beta.json").read_text())
    assert entry["cert"] == (b / "CA.crt").read_text()  # stored in our format (PEM)


def test_import_upstream_nickname_file(pair, tmp_path):
    a, b = pair
    ca = x509.load_pem_x509_certificate((b / "CA.crt").read_bytes())
    nick = tmp_path / "beamline.yaml"
    nick.write_text(yaml.safe_dump({"url": "https://127.0.0.1:8443", "cert": exchange.to_b64(ca),
                                    "auths": ["CN=beta CA"]}))  # fmt: skip
    run("import-service", nick, "--config", a)
    entry = json.loads((a / "known_servers" / "beamline.json").read_text())
    assert entry == {"name": "beamline", "url": "https://127.0.0.1:8443",
                     "cert": (b / "CA.crt").read_text()}  # fmt: skip
    run("import-service", nick, "--name", "bl2", "--url", "https://10.0.0.1:1", "--config", a)
    assert json.loads((a / "known_servers" / "bl2.json").read_text())["url"] == "https://10.0.0.1:1"


@pytest.mark.parametrize(
    ("command", "content", "needle"),
    [
        ("add-client", b"not base64 at all!", "not a certificate (expected PEM, url-safe base64"),
        ("add-client", base64.b64encode(b"\x30\x03\x02\x01\x01"), "not a valid certificate"),
        ("add-client", b'{"signed_cert": "x"}', "JSON with 'ca_cert'"),
        (
            "add-service",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "not a valid certificate",
        ),
        ("introduce", b"hello", "expected a certificate or certificate request"),
        ("introduce", base64.b64encode(b"\x30\x03\x02\x01\x01"), "malformed certificate"),
        ("import-service", b"- a list\n", "not an upstream service file"),
        ("import-service", b"url: https://h:1\n", "has no pinned cert"),
    ],
)
def test_bad_documents_are_one_clear_line(pair, tmp_path, command, content, needle):
    a, _b = pair
    bad = tmp_path / "bad.doc"
    bad.write_bytes(content)
    args = {
        "add-client": ["x", bad],
        "add-service": ["x", "https://127.0.0.1:1", bad],
        "introduce": [bad],
        "import-service": [bad],
    }[command]
    out = run(command, *args, "--config", a, check=False)
    one_line_error(out, needle)
    assert str(bad) in out.stderr


def test_unknown_format_is_refused(pair):
    out = run("get-ident", "--format", "der", "--config", pair[0], check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr


def test_read_request_errors_raise_certified_error():
    with pytest.raises(CertifiedError, match="x: expected a certificate"):
        exchange.read_request(b"", "x")
