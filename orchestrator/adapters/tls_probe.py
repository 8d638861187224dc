"""What certificate a member actually serves on a port (read with a TLS handshake)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


def served_certificate(
    address: str, port: int, *, client_cert: Path, client_key: Path, timeout: float = 5.0
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
    host = address.strip("[]")
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname=None) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{address}:{port} served no certificate")
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)
