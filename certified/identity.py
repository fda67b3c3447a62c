"""`Certified`: one identity's TLS contexts and mTLS HTTP clients with nickname pinning."""

from __future__ import annotations

import json
import os
import ssl
from functools import cached_property
from urllib.parse import urlsplit, urlunsplit

import httpx
from cryptography import x509
from pydantic import ValidationError

from .errors import CertifiedError, ConfigError
from .keys import load_certificate, load_private_key
from .layout import NAME_RE, Layout, find_config_dir
from .models import ServiceEntry
from .pki import identity_of, pem
from .trust import ClientCA


class Certified:
    """An identity (key + certificate) and what it trusts, read from a config directory."""

    def __init__(self, config_dir: str | os.PathLike | None = None) -> None:
        self.layout = Layout(find_config_dir(config_dir))
        if not self.layout.root.is_dir():
            raise ConfigError(f"certified config directory {self.layout.root} does not exist")

    # -- identity ---------------------------------------------------------------
    @cached_property
    def certificate(self) -> x509.Certificate:
        return load_certificate(self.layout.id_cert)

    @property
    def identity(self) -> str:
        """This identity's name as servers see it (`cn:...` or `uid:...`)."""
        return identity_of(self.certificate)

    def _load_chain(self, ctx: ssl.SSLContext) -> None:
        key_path = self.layout.id_key
        load_private_key(key_path)  # permission and format check with a clear error
        try:
            ctx.load_cert_chain(str(self.layout.id_cert), str(key_path))
        except (ssl.SSLError, OSError) as exc:
            raise CertifiedError(
                f"cannot use identity in {self.layout.root} (id.crt/id.key): {exc}"
            ) from None

    # -- trust ------------------------------------------------------------------
    def trusted_clients(self) -> list[ClientCA]:
        """CAs whose clients this identity accepts; `NAME.users` marks user-issuing CAs."""
        d = self.layout.known_clients
        if not d.is_dir():
            return []
        return [
            ClientCA(p.stem, load_certificate(p), users=p.with_suffix(".users").exists())
            for p in sorted(d.glob("*.crt"))
        ]

    def services(self) -> dict[str, ServiceEntry]:
        d = self.layout.known_servers
        out: dict[str, ServiceEntry] = {}
        if not d.is_dir():
            return out
        for path in sorted(d.glob("*.json")):
            try:
                entry = ServiceEntry.model_validate(json.loads(path.read_text()))
            except (ValueError, ValidationError) as exc:
                raise CertifiedError(f"{path}: invalid service entry: {exc}") from None
            out[entry.name] = entry
        return out

    def service(self, name: str) -> ServiceEntry:
        try:
            return self.services()[name]
        except KeyError:
            known = ", ".join(self.services()) or "none"
            raise CertifiedError(
                f"unknown service nickname {name!r} (known: {known});"
                f" add it with: certified add-service {name} URL CERT"
            ) from None

    # -- TLS --------------------------------------------------------------------
    def ssl_context(self, server: bool, *, pinned: str | None = None) -> ssl.SSLContext:
        """TLS 1.3 context. Server: CERT_REQUIRED against trusted client CAs.
        Client: verifies the server against `pinned` (PEM) or every trusted service."""
        if server:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            self._load_chain(ctx)
            cas = [c.cert for c in self.trusted_clients()]
            if not cas:
                raise CertifiedError(
                    f"{self.layout.root} trusts no clients;"
                    " add one with: certified add-client NAME CA_CERT"
                )
            ctx.load_verify_locations(cadata="".join(pem(c) for c in cas))
            ctx.verify_mode = ssl.CERT_REQUIRED
            return ctx
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        # A pinned leaf (not a CA) must be accepted as a trust anchor.
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        self._load_chain(ctx)
        anchors = (
            pinned if pinned is not None else "".join(s.cert for s in self.services().values())
        )
        if anchors:
            ctx.load_verify_locations(cadata=anchors)
        else:
            ctx.load_default_certs()
        return ctx

    def resolve(
        self, url: str, services: dict[str, ServiceEntry] | None = None
    ) -> tuple[str, str | None]:
        """Map `https://NICK/path` to the service's URL + path; return (url, pinned PEM).

        `services` (default: read now from known_servers/) is the nickname table to use."""
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise CertifiedError(f"{url!r}: only https:// URLs are allowed")
        host = parts.netloc
        if host and ":" not in host and "." not in host and NAME_RE.match(host):
            services = self.services() if services is None else services
            if host in services or host != "localhost":
                entry = services.get(host) or self.service(host)
                base = urlsplit(entry.url)
                path = base.path.rstrip("/") + (parts.path or "")
                return urlunsplit(("https", base.netloc, path, parts.query, "")), entry.cert
        return url, None

    def client(self, base_url: str = "", **kwargs) -> httpx.Client:
        """An httpx.Client speaking mTLS as this identity: the suite's one pinned client.

        Nicknames (`https://psik/jobs`) are resolved and the connection pinned to the
        service's certificate, in `base_url` and in absolute request URLs alike; other
        https URLs are verified against the trusted services' certificates (or the
        system CAs when there are none)."""
        if base_url:
            self.resolve(base_url)  # an unknown nickname or a non-https URL fails here
        return httpx.Client(base_url=base_url, transport=_NicknameTransport(self), **kwargs)

    def async_client(self, base_url: str = "", **kwargs) -> httpx.AsyncClient:
        """An httpx.AsyncClient speaking mTLS as this identity (nicknames as in `client`)."""
        if base_url:
            self.resolve(base_url)
        return httpx.AsyncClient(
            base_url=base_url, transport=_AsyncNicknameTransport(self), **kwargs
        )


class _Routes:
    """Resolve a request's nickname and pick a transport pinned to that service.

    The trusted-service table is read once per client, TLS contexts once per pin."""

    def __init__(self, certified: Certified, make) -> None:
        self.certified = certified
        self.make = make
        self.services = certified.services()
        self.transports: dict[str | None, object] = {}

    def route(self, request: httpx.Request):
        real, pinned = self.certified.resolve(str(request.url), self.services)
        if real != str(request.url):
            request.url = httpx.URL(real)
            request.headers["host"] = request.url.netloc.decode()
        if pinned not in self.transports:
            self.transports[pinned] = self.make(
                verify=self.certified.ssl_context(False, pinned=pinned)
            )
        return self.transports[pinned]


class _NicknameTransport(httpx.BaseTransport):
    def __init__(self, certified: Certified) -> None:
        self.routes = _Routes(certified, httpx.HTTPTransport)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.routes.route(request).handle_request(request)

    def close(self) -> None:
        for t in self.routes.transports.values():
            t.close()


class _AsyncNicknameTransport(httpx.AsyncBaseTransport):
    def __init__(self, certified: Certified) -> None:
        self.routes = _Routes(certified, httpx.AsyncHTTPTransport)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.routes.route(request).handle_async_request(request)

    async def aclose(self) -> None:
        for t in self.routes.transports.values():
            await t.aclose()
