"""age encryption of backups (pyrage: Python bindings to rage, the Rust age): the files `age -d`
opens by hand. Streaming both ways (pyrage's encrypt_io/decrypt_io copy through a buffer),
so an 8 GB snapshot is never held in memory.

Recipients: X25519 (`age1...`) and SSH public keys (`ssh-ed25519 ...`, `ssh-rsa ...`).
Identities: an age identity file (`AGE-SECRET-KEY-1...` lines, `#` comments, as age-keygen
writes it) or an unencrypted OpenSSH private key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO, Any, Protocol

import pyrage
from pyrage import ssh, x25519

from orchestrator.core.backup_catalog import RECIPIENT_HINT, recipient_kind
from orchestrator.core.errors import BackupStoreError, UsageError


class Sink(Protocol):
    """Where bytes go: a file, or a wrapper that hashes on the way (`HashingWriter`)."""

    def write(self, data: bytes, /) -> int: ...


def parse_recipient(text: str) -> Any:
    """One recipient from an `age1...` string or an SSH public key line; UsageError."""
    value = text.strip()
    kind = recipient_kind(value)
    try:
        if kind == "age":
            return x25519.Recipient.from_str(value)
        if kind == "ssh":
            return ssh.Recipient.from_str(value)
    except pyrage.RecipientError:
        pass
    shown = value if len(value) <= 30 else value[:27] + "..."
    raise UsageError(f"--encrypt-to {shown!r}: {RECIPIENT_HINT}")


def load_identities(path: Path) -> list[Any]:
    """The identities in `path`: an age identity file, or an OpenSSH private key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--identity {path}: cannot read it ({exc.strerror or exc})") from None
    if b"PRIVATE KEY-----" in data:
        try:
            return [ssh.Identity.from_buffer(data)]
        except pyrage.IdentityError as exc:
            raise UsageError(f"--identity {path}: not a usable SSH private key ({exc})") from None
    lines = [
        line.strip()
        for line in data.decode("ascii", errors="replace").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    try:
        identities = [x25519.Identity.from_str(line) for line in lines]
    except pyrage.IdentityError:
        identities = []
    if not identities:
        raise UsageError(
            f"--identity {path}: not an age identity file (AGE-SECRET-KEY-1... lines) or an "
            "unencrypted OpenSSH private key"
        )
    return identities


class HashingWriter:
    """A file's writer that hashes and counts what goes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)


def encrypt(src: IO[bytes], dst: Sink, recipients: list[Any]) -> None:
    """Stream `src` into `dst`, encrypted to every recipient."""
    try:
        pyrage.encrypt_io(src, dst, recipients)
    except (pyrage.EncryptError, OSError) as exc:
        raise BackupStoreError(f"age encryption failed: {exc}") from None


def decrypt(src: IO[bytes], dst: Sink, identities: list[Any], what: str) -> None:
    """Stream `src` into `dst`, decrypted. A wrong identity, a truncated or damaged file:
    BackupStoreError (what `dst` received is then worthless: the caller discards it)."""
    try:
        pyrage.decrypt_io(src, dst, identities)
    except pyrage.DecryptError as exc:
        if "No matching keys" in str(exc):
            raise BackupStoreError(
                f"{what}: none of the --identity keys can decrypt it (it was encrypted to "
                "other recipients)"
            ) from None
        raise BackupStoreError(f"{what}: not a readable age file ({exc})") from None
    except OSError as exc:
        raise BackupStoreError(
            f"{what}: decryption failed, the file is truncated or damaged ({exc})"
        ) from None
