"""The inventory model: the validated [cluster], [ssh] and [[hosts]] tables as frozen
dataclasses, with the URLs derived from them.

Nothing here reads a file or checks a value: `inventory_rules.parse_inventory` builds an
`Inventory` from TOML text (every value already checked), `adapters.inventory_file` reads
and edits the file.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.errors import UsageError
from orchestrator.core.rules import Version, release_pin_key

DEFAULT_RELEASE_URL = "https://github.com/etcd-io/etcd/releases/download"
STATE_DIR_NAME = ".etcd-deploy"
"""Default state lives in <inventory folder>/.etcd-deploy/<cluster name>."""
_DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts").expanduser()


@dataclass(frozen=True)
class SSHSettings:
    """The [ssh] table: how the control machine reaches every host."""

    user: str = "root"
    identity_file: Path | None = None
    known_hosts: Path = _DEFAULT_KNOWN_HOSTS
    port: int = 22
    sudo: bool = False
    jump_host: str | None = None
    host_key_check: str = "strict"
    config_file: Path | None = None
    etcd_api: str = "auto"  # how etcd's API is reached: auto | direct | ssh (core.api_route)


@dataclass(frozen=True)
class BackupSettings:
    """The [backup] table: where `backup --to` stores by default and how (command-line
    options win). Credentials never live here: the standard AWS chain supplies them."""

    to: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    encrypt_to: tuple[str, ...] = ()
    keep: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None


@dataclass(frozen=True)
class Host:
    """One [[hosts]] entry, defaults already filled in from [cluster] and [ssh]."""

    name: str
    address: str
    etcd_address: str
    ssh_port: int
    ssh_user: str
    extra_sans: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Cluster:
    """The [cluster] table (keyword-only: there are many fields)."""

    name: str
    etcd_version: Version  # parsed and checked once, when the inventory loads
    release_url: str = DEFAULT_RELEASE_URL
    release_sha256: dict[str, str] = field(default_factory=dict)  # "3.5.17/amd64" -> sha256
    client_port: int = 2379
    peer_port: int = 2380
    data_dir: str = "/var/lib/etcd"
    install_dir: str = "/opt/bin"
    config_dir: str = "/etc/etcd"
    cert_days: int = 365
    ca_days: int = 3650
    extra_sans: tuple[str, ...] = ()
    flags: dict[str, str] = field(default_factory=dict)
    state_dir: Path
    bootstrap: str = "learner"
    renew_within_days: int = 30
    # /metrics and /health on plain HTTP (etcd's listen-metrics-urls): "local" binds
    # 127.0.0.1, "host" also the member's address (for a scraper), "off" none.
    metrics: str = "local"
    metrics_port: int = 2381

    def release_pin(self, version: Version | str, arch: str) -> str | None:
        """The tarball's sha256 pinned in release_sha256, or None (SHA256SUMS decides)."""
        return self.release_sha256.get(release_pin_key(version, arch))


@dataclass(frozen=True)
class Inventory:
    """A validated inventory. `path` is absolute."""

    path: Path
    cluster: Cluster
    ssh: SSHSettings
    hosts: tuple[Host, ...]
    warnings: tuple[str, ...] = ()
    backup: BackupSettings = BackupSettings()

    def host(self, name: str) -> Host:
        """The host called `name`; UsageError naming the inventory if there is none."""
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise UsageError(f"{self.path}: no host named {name!r} (hosts: {known})")

    def peer_url(self, host: Host) -> str:
        """https://<etcd_address>:<peer_port>, IPv6 bracketed."""
        return f"https://{url_host(host.etcd_address)}:{self.cluster.peer_port}"

    def client_url(self, host: Host) -> str:
        """https://<etcd_address>:<client_port>, IPv6 bracketed."""
        return f"https://{url_host(host.etcd_address)}:{self.cluster.client_port}"

    def client_urls(self) -> tuple[str, ...]:
        """Client URLs of every host, in inventory order."""
        return tuple(self.client_url(h) for h in self.hosts)

    def initial_cluster(self, hosts: Iterable[Host] | None = None) -> str:
        """etcd's --initial-cluster value ("name=peer_url,...") for `hosts` (default all)."""
        chosen = self.hosts if hosts is None else hosts
        return ",".join(f"{h.name}={self.peer_url(h)}" for h in chosen)


def url_host(address: str) -> str:
    """Bracket an IPv6 literal for use in a URL ("fd00::1" -> "[fd00::1]")."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return f"[{address}]" if ip.version == 6 else address


def is_ip(value: str) -> bool:
    """True for an IPv4 or IPv6 literal."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


JUMP_HOST = re.compile(r"(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]*\]|[^:@\[\]]+)(?::(?P<port>[^:]*))?")
"""ssh.jump_host's form: [user@]host[:port], an IPv6 host in brackets."""


def jump_host_address(value: str) -> str:
    """The host part of a valid ssh.jump_host ("admin@[fd00::1]:22" -> "fd00::1")."""
    match = JUMP_HOST.fullmatch(value)
    host = match["host"] if match else value
    return host[1:-1] if host.startswith("[") else host
