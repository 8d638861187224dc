"""TLS over an SSH channel, in memory: the same handshake and certificate checks as over a
socket. The "channel" here is one end of a local socketpair with paramiko's Channel methods;
the other end is a real TLS server (Python's ssl) in a thread. No network; the socket path's
test listens on loopback only."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpcore
import pytest
from cryptography import x509

from orchestrator.adapters.channel_stream import ChannelStream, peer_certificate
from orchestrator.adapters.tls_probe import served_certificate
from tests.self_signed import self_signed


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


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[SocketChannel, Path]]:
    """A channel whose far end is a TLS server answering "pong: <what it read>"."""
    cert, key = self_signed(tmp_path, "member", ip="10.1.2.3")
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
    other, _ = self_signed(tmp_path / "other", "member", ip="10.1.2.3")
    context = ssl.create_default_context(cafile=str(other))
    with pytest.raises(httpcore.ConnectError, match=r"(?i)certificate verify failed"):
        ChannelStream(channel).start_tls(context, "10.1.2.3", timeout=5)  # type: ignore[arg-type]


def test_served_certificate_reads_the_leaf_over_a_plain_socket_too(tmp_path: Path) -> None:
    """The direct path (httpcore's own socket stream, on loopback) gives the same answer."""
    cert, key = self_signed(tmp_path, "member", ip="127.0.0.1")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        sock, _ = listener.accept()
        with contextlib.suppress(ssl.SSLError, OSError), server.wrap_socket(sock, True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        pem = served_certificate(
            httpcore.SyncBackend(), "127.0.0.1", port, client_cert=cert, client_key=key
        )
    finally:
        thread.join(timeout=5)
        listener.close()
    assert pem == cert.read_bytes()
