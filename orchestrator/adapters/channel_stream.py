"""A TCP connection made through SSH (a paramiko direct-tcpip channel) as an httpcore
network stream, TLS included, so httpx speaks HTTPS over it exactly as over a socket.

`ssl.SSLContext.wrap_socket` needs a real socket; a channel is not one, so TLS runs in
memory (`SSLContext.wrap_bio`): the same OpenSSL handshake, certificate and hostname checks
as a socket's, with the records carried by the channel.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpcore
import paramiko

T = TypeVar("T")
# Read what the channel holds, up to this much: paramiko deletes each read from the front of
# its buffer (a memmove of what stays), so small reads from a full window cost O(n) each.
RECV_BYTES = 4 * 1024 * 1024
_READ_ERRORS = (OSError, EOFError, paramiko.SSHException)


class ChannelStream(httpcore.NetworkStream):
    """Plain bytes over one channel."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.channel.settimeout(timeout)
        with _as_httpcore(httpcore.ReadTimeout, httpcore.ReadError):
            return self.channel.recv(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.channel.settimeout(timeout)
        with _as_httpcore(httpcore.WriteTimeout, httpcore.WriteError):
            self.channel.sendall(buffer)

    def close(self) -> None:
        self.channel.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return TlsChannelStream(self.channel, ssl_context, server_hostname, timeout)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle keep-alive connection the far end closed
            return _closed_or_readable(self.channel)
        return None


class TlsChannelStream(ChannelStream):
    """TLS over one channel (an SSLObject fed by the channel)."""

    def __init__(
        self,
        channel: paramiko.Channel,
        context: ssl.SSLContext,
        server_hostname: str | None,
        timeout: float | None,
    ) -> None:
        super().__init__(channel)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self.channel.settimeout(timeout)
        try:
            # ssl.SSLError is an OSError: a failed verification is a ConnectError too
            with _as_httpcore(httpcore.ConnectTimeout, httpcore.ConnectError):
                self._io(self.ssl_object.do_handshake)
        except (httpcore.ConnectError, httpcore.ConnectTimeout):
            self.channel.close()  # no half-open channel left on the host's SSH connection
            raise

    def _io(self, operation: Callable[[], T]) -> T:
        """Run an SSLObject operation, moving records through the channel until it is done."""
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                self._flush()
                data = self.channel.recv(RECV_BYTES)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self.channel.sendall(pending)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.channel.settimeout(timeout)
        try:
            with _as_httpcore(httpcore.ReadTimeout, httpcore.ReadError):
                return self._io(functools.partial(self.ssl_object.read, max_bytes))
        except httpcore.ReadError as exc:
            if isinstance(exc.__cause__, ssl.SSLZeroReturnError):
                return b""  # the far end closed TLS cleanly
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.channel.settimeout(timeout)
        view = memoryview(buffer)
        with _as_httpcore(httpcore.WriteTimeout, httpcore.WriteError):
            while view:
                sent = self._io(functools.partial(self.ssl_object.write, view))
                view = view[sent:]

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("TLS inside TLS over an SSH channel is not supported")

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self.ssl_object
        return super().get_extra_info(info)


@contextlib.contextmanager
def _as_httpcore(on_timeout: type[Exception], on_error: type[Exception]) -> Iterator[None]:
    """A channel's (or TLS's) failures as the httpcore errors httpx expects."""
    try:
        yield
    except TimeoutError as exc:  # before OSError: it is one
        raise on_timeout(str(exc)) from exc
    except _READ_ERRORS as exc:
        raise on_error(str(exc)) from exc


def _closed_or_readable(channel: paramiko.Channel) -> bool:
    return bool(channel.closed or channel.eof_received or channel.recv_ready())


def peer_certificate(stream: httpcore.NetworkStream) -> bytes:
    """The DER certificate the far end of a TLS stream presented (socket or channel)."""
    tls = stream.get_extra_info("ssl_object")
    # positional: a socket stream hands out the C-level SSL object, which takes no keywords
    der = tls.getpeercert(True) if tls is not None else None
    if not der:
        raise ssl.SSLError("the server presented no certificate")
    return bytes(der)
