"""What certificate a member actually serves on a port (read with a TLS handshake), over
the run's way to members' ports (`member_links`: straight, or through SSH)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpcore
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from orchestrator.adapters.channel_stream import peer_certificate
from orchestrator.core.errors import EtcdPortBlocked


def served_certificate(
    network: httpcore.NetworkBackend,
    address: str,
    port: int,
    *,
    client_cert: Path,
    client_key: Path,
    timeout: float = 5.0,
) -> bytes:
    """The PEM of the leaf certificate served at address:port.

    The handshake presents our client cert (etcd asks for one on both ports) and does not
    verify the server: an expired or foreign cert must still be readable, to report it.
    Raises OSError (ssl.SSLError included) when no handshake completes.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(client_cert), str(client_key))
    try:
        stream = network.connect_tcp(address.strip("[]"), port, timeout=timeout)
        try:
            stream = stream.start_tls(context, server_hostname=None, timeout=timeout)
            der = peer_certificate(stream)
        finally:
            stream.close()  # the TLS stream once there is one (it closes what it wraps)
    except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
        raise OSError(f"{address}:{port}: {exc}") from None
    except EtcdPortBlocked as exc:  # "direct" and the port closed to us: a problem to report
        raise OSError(str(exc)) from None
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)
