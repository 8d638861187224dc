"""TLS over an SSH channel, in memory: the same handshake and certificate checks as over a
socket. The "channel" here is one end of a local socketpair with paramiko's Channel methods;
the other end is a real TLS server (Python's ssl) in a thread. No network."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestrator.adapters.channel_stream import ChannelStream, peer_certificate


class SocketChannel:
    """The paramiko.Channel methods the streams use, over a plain socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False
        self.eof_received = False

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def recv(self, size: int) -> bytes:
        data = self.sock.recv(size)
        self.eof_received = not data
        return data

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_ready(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def _cert(tmp_path: Path, ip: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "member")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[SocketChannel, Path]]:
    """A channel whose far end is a TLS server answering "pong: <what it read>"."""
    cert, key = _cert(tmp_path, "10.1.2.3")
    ours, theirs = socket.socketpair()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)

    def serve() -> None:
        try:
            with server.wrap_socket(theirs, server_side=True) as tls:
                tls.sendall(b"pong: " + tls.recv(100))
        except (ssl.SSLError, OSError):
            pass  # a refused handshake is what some tests want

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield SocketChannel(ours), cert
    thread.join(timeout=5)


def test_tls_over_a_channel_checks_the_server_and_carries_bytes(
    served: tuple[SocketChannel, Path],
) -> None:
    channel, cert = served
    context = ssl.create_default_context(cafile=str(cert))
    tls = ChannelStream(channel).start_tls(context, "10.1.2.3", timeout=5)  # type: ignore[arg-type]
    tls.write(b"ping", timeout=5)
    assert tls.read(100, timeout=5) == b"pong: ping"
    assert x509.load_der_x509_certificate(peer_certificate(tls)).subject.rfc4514_string() == (
        "CN=member"
    )
    tls.close()
    assert channel.closed


def test_a_certificate_for_another_address_is_refused(
    served: tuple[SocketChannel, Path],
) -> None:
    channel, cert = served
    context = ssl.create_default_context(cafile=str(cert))
    with pytest.raises(httpcore.ConnectError, match=r"(?i)certificate"):
        ChannelStream(channel).start_tls(context, "10.9.9.9", timeout=5)  # type: ignore[arg-type]
    assert channel.closed  # no channel left open on the host's SSH connection


def test_an_untrusted_server_is_refused(served: tuple[SocketChannel, Path], tmp_path: Path) -> None:
    channel, _ = served
    (tmp_path / "other").mkdir()
    other, _ = _cert(tmp_path / "other", "10.1.2.3")
    context = ssl.create_default_context(cafile=str(other))
    with pytest.raises(httpcore.ConnectError, match=r"(?i)certificate verify failed"):
        ChannelStream(channel).start_tls(context, "10.1.2.3", timeout=5)  # type: ignore[arg-type]
