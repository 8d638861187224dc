"""A TCP connection made through SSH (a paramiko direct-tcpip channel) as an httpcore
network stream, TLS included, so httpx speaks HTTPS over it exactly as over a socket.

`ssl.SSLContext.wrap_socket` needs a real socket; a channel is not one, so TLS runs in
memory (`SSLContext.wrap_bio`): the same OpenSSL handshake, certificate and hostname checks
as a socket's, with the records carried by the channel.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import httpcore
import paramiko

T = TypeVar("T")
TLS_RECORD = 16384
_READ_ERRORS = (OSError, EOFError, paramiko.SSHException)


class ChannelStream(httpcore.NetworkStream):
    """Plain bytes over one channel."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.channel.settimeout(timeout)
        try:
            return self.channel.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except _READ_ERRORS as exc:
            raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.channel.settimeout(timeout)
        try:
            self.channel.sendall(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except _READ_ERRORS as exc:
            raise httpcore.WriteError(str(exc)) from exc

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


class TlsChannelStream(httpcore.NetworkStream):
    """TLS over one channel (an SSLObject fed by the channel)."""

    def __init__(
        self,
        channel: paramiko.Channel,
        context: ssl.SSLContext,
        server_hostname: str | None,
        timeout: float | None,
    ) -> None:
        self.channel = channel
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self.channel.settimeout(timeout)
        try:
            self._io(self.ssl_object.do_handshake)
        except TimeoutError as exc:
            self.channel.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except _READ_ERRORS as exc:  # ssl.SSLError is an OSError: a failed verification too
            self.channel.close()
            raise httpcore.ConnectError(str(exc)) from exc

    def _io(self, operation: Callable[[], T]) -> T:
        """Run an SSLObject operation, moving records through the channel until it is done."""
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                self._flush()
                data = self.channel.recv(TLS_RECORD)
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
            return self._io(functools.partial(self.ssl_object.read, max_bytes))
        except ssl.SSLZeroReturnError:
            return b""  # the far end closed TLS cleanly
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except _READ_ERRORS as exc:
            raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.channel.settimeout(timeout)
        view = memoryview(buffer)
        try:
            while view:
                sent = self._io(functools.partial(self.ssl_object.write, view))
                view = view[sent:]
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except _READ_ERRORS as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self.channel.close()

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
        if info == "is_readable":
            return _closed_or_readable(self.channel)
        return None


def _closed_or_readable(channel: paramiko.Channel) -> bool:
    return bool(channel.closed or channel.eof_received or channel.recv_ready())


def peer_certificate(stream: httpcore.NetworkStream) -> bytes:
    """The DER certificate the far end of a TLS stream presented (socket or channel)."""
    tls = stream.get_extra_info("ssl_object")
    der = tls.getpeercert(binary_form=True) if tls is not None else None
    if not der:
        raise ssl.SSLError("the server presented no certificate")
    return bytes(der)
