"""One hierarchy of errors, each class with its exit code, and `EXIT_CODES`: every exit code
etcd-deploy has, with its meaning (the CLI's epilog is built from it; README's table lists
the same codes, which a unit test checks)."""

from __future__ import annotations


class EtcdDeployError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code = 1


class UsageError(EtcdDeployError):
    """A bad command line or inventory: nothing was changed on any host."""

    exit_code = 2


class InventoryError(UsageError):
    """A bad inventory file; the message names the file and the key."""

    def __init__(self, path: object, key: str, message: str) -> None:
        self.path = str(path)
        self.key = key
        self.detail = message
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + message)


class PreflightError(EtcdDeployError):
    """A local check failed before any host was changed (missing key file, bad release...)."""

    exit_code = 3


class EtcdPortBlocked(PreflightError):
    """A member's port cannot be reached from this machine and `ssh.etcd_api` forbids going
    through SSH: the message names the port and the setting."""


class TransportError(EtcdDeployError):
    """SSH to a host failed (unreachable, host key refused, command failed)."""

    exit_code = 4

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        super().__init__(f"{host}: {message}")


class SafetyRefusal(EtcdDeployError):
    """The tool refused an action that could lose data or quorum."""

    exit_code = 5


class ClusterUnhealthy(EtcdDeployError):
    """The cluster is degraded or did not become healthy in time."""

    exit_code = 6


class BackupStoreError(EtcdDeployError):
    """An off-site backup could not be stored or read back: the store refused or could not
    be reached, or a stored backup does not verify (wrong identity, truncated, its manifest
    does not match). Nothing on any host was changed by it."""

    exit_code = 8


class PhaseFailure(EtcdDeployError):
    """A named phase failed on a host; the other hosts' results stay visible."""

    exit_code = 1

    def __init__(self, phase: str, host: str | None, message: str, exit_code: int = 1) -> None:
        self.phase = phase
        self.host = host
        self.exit_code = exit_code
        self.detail = message
        label = f"{phase} {host}" if host else phase
        super().__init__(f"[{label}] {message}")


def detail_of(exc: Exception) -> str:
    """An error's message without its [phase] label, for wrapping it in another one."""
    return getattr(exc, "detail", None) or str(exc)


# Exit codes that are not errors (each error's is its class's `exit_code`).
EXIT_OK = 0
# `certs check`: a cert expires within the window, has expired or does not match the inventory.
EXIT_CERTS_EXPIRING = 7
EXIT_CHANGES_PENDING = 10  # `plan`, `up --dry-run`, every --dry-run: changes would be made
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT): re-run the same command, it converges

# Every exit code, in order, with its meaning in a few words (the CLI's epilog).
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ok",
    EtcdDeployError.exit_code: "failed",
    UsageError.exit_code: "usage/inventory error",
    PreflightError.exit_code: "preflight",
    TransportError.exit_code: "SSH",
    SafetyRefusal.exit_code: "refused for safety",
    ClusterUnhealthy.exit_code: "cluster unhealthy",
    EXIT_CERTS_EXPIRING: "certs need renewal (certs check)",
    BackupStoreError.exit_code: "backup store",
    EXIT_CHANGES_PENDING: "changes pending (plan)",
    EXIT_INTERRUPTED: "interrupted",
}
