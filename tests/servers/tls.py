"""Throwaway certificates and a threaded HTTP(S) fake server that counts requests and injects faults."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.servers.gate import InFlightGate

# -- certificates -------------------------------------------------------------------------------

_DAY = datetime.timedelta(days=1)


def self_signed(
    name: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
) -> x509.CertificateBuilder:
    """A self-signed certificate for `name`, valid from yesterday for 30 days, to extend and sign."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 30 * _DAY)
    )


@dataclass(frozen=True)
class Authority:
    """A private CA: its key signs server certificates; `pem` is what a client must trust."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    path: Path  # the CA certificate as PEM, for REQUESTS_CA_BUNDLE / COSMIAN_KMS_CA_CERT

    @classmethod
    def create(cls, directory: Path, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            self_signed(name, key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        path = directory / f"{name}-ca.pem"
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(key, certificate, path)

    def issue(self, directory: Path, names: list[str]) -> ServerCertificate:
        """A server certificate for these DNS names and IP addresses, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        alternative: list[x509.GeneralName] = []
        for name in names:
            try:
                alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternative.append(x509.DNSName(name))
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        stem = directory / f"server-{len(list(directory.glob('server-*')))}"
        cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return ServerCertificate(cert_path, key_path)


@dataclass(frozen=True)
class ServerCertificate:
    cert_path: Path
    key_path: Path

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


@dataclass(frozen=True)
class ClientCertificate:
    """A self-signed RSA certificate an application registration would hold (Azure AD cert auth)."""

    pem_path: Path  # private key and certificate in one PEM, as AZURE_CLIENT_CERTIFICATE_PATH
    certificate: x509.Certificate

    @classmethod
    def create(cls, directory: Path, name: str, password: str | None = None) -> ClientCertificate:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        certificate = self_signed(name, key).sign(key, hashes.SHA256())
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password.encode())
            if password
            else serialization.NoEncryption()
        )
        path = directory / f"{name}.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
            + certificate.public_bytes(serialization.Encoding.PEM)
        )
        return cls(path, certificate)

    def thumbprint(self, algorithm: hashes.HashAlgorithm) -> str:
        """The certificate's thumbprint as a JWT x5t / x5t#S256 header carries it (base64url)."""
        digest = self.certificate.fingerprint(algorithm)
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# -- the server ---------------------------------------------------------------------------------


def eventually(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Whether `predicate` holds within `timeout`: a server thread may still be counting what
    a client that has already exited did to it."""
    until = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > until:
            return False
        time.sleep(0.01)
    return True


@dataclass
class Request:
    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: Message
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
        return cls(
            status,
            json.dumps(document).encode(),
            {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
        )

    @classmethod
    def text(cls, status: int, text: str, headers: dict[str, str] | None = None) -> Response:
        return cls(status, text.encode(), {"Content-Type": "text/plain", **(headers or {})})


@dataclass
class Fault:
    status: int
    remaining: int
    retry_after: str | None


class FakeServer:
    """A threaded HTTP server on a loopback address, HTTPS when given a certificate. Subclasses
    name each request's endpoint and answer it; this class counts requests per endpoint, measures
    how many were in flight at once, adds latency and fails the first N requests on demand."""

    def __init__(
        self, host: str = "127.0.0.1", certificate: ServerCertificate | None = None
    ) -> None:
        self.host = host
        self.tls = certificate.context() if certificate else None
        self.counts: Counter[str] = Counter()
        self.latency: dict[str, float] = {}
        self.faults: dict[str, Fault] = {}
        self.handshake_failures = 0
        self.max_in_flight = 0
        self.gate: InFlightGate | None = None  # hold requests until the client has N in flight
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )  # the default 0.5 s poll would make every stop() take half a second

    # -- what subclasses provide

    def endpoint(self, request: Request) -> str:
        """A short name for what the request asks ("token", "secret", ...), for counts and faults."""
        raise NotImplementedError

    def respond(self, endpoint: str, request: Request) -> Response:
        raise NotImplementedError

    def fault_response(self, endpoint: str, fault: Fault) -> Response:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        return Response.text(fault.status, f"injected fault {fault.status}", headers)

    # -- what tests use

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def fail(self, endpoint: str, status: int, times: int, retry_after: str | None = None) -> None:
        """Answer the next `times` requests to `endpoint` with `status` (429, 500, 503...)."""
        self.faults[endpoint] = Fault(status, times, retry_after)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- plumbing

    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        split = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        request = Request(
            handler.command,
            split.path,
            urllib.parse.parse_qs(split.query, keep_blank_values=True),
            handler.headers,
            handler.rfile.read(length) if length else b"",
        )
        endpoint = self.endpoint(request)
        with self._lock:
            self.counts[endpoint] += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            fault = self.faults.get(endpoint)
            if fault and fault.remaining > 0:
                fault.remaining -= 1
            else:
                fault = None
        try:
            if self.gate is not None:
                self.gate.enter()
            delay = self.latency.get(endpoint, 0.0)
            if delay:
                time.sleep(delay)
            response = (
                self.fault_response(endpoint, fault) if fault else self.respond(endpoint, request)
            )
        finally:
            if self.gate is not None:
                self.gate.leave()
            with self._lock:
                self._in_flight -= 1
        handler.send_response(response.status)
        for name, value in response.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(response.body)))
        handler.end_headers()
        handler.wfile.write(response.body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services: the client reuses connections
    # http.server sends headers and body in two writes; with Nagle on, the body waits for the
    # client's delayed ACK on a reused connection: ~40 ms per request no real service adds.
    disable_nagle_algorithm = True
    server: _Server

    def _any(self) -> None:
        self.server.fake._dispatch(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest output stays readable


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops bursts of concurrent connects (1 s SYN retry)
    allow_reuse_address = True

    def __init__(self, fake: FakeServer) -> None:
        self.fake = fake
        self.address_family = socket.AF_INET6 if ":" in fake.host else socket.AF_INET
        super().__init__((fake.host, 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs in the request's own thread, so one slow client cannot stall accept().
        if self.fake.tls is not None:
            try:
                request = self.fake.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                with self.fake._lock:
                    self.fake.handshake_failures += 1
                return
        try:
            super().finish_request(request, client_address)
        finally:
            request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-request is normal in fault tests
