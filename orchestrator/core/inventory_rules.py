"""The inventory's rules: TOML text in, a validated `Inventory` out (`parse_inventory`).

Validation is table-driven: each TOML table has a schema (`inventory_schema`) of key ->
kind, default and value check (`inventory_values`); the rules across keys and hosts
(distinct ports and folders, unique hosts, root or sudo, release pins) live here in small
functions. Every error is an `InventoryError(path, key, message)` naming the file and the key.

Besides the text, validation looks at the control machine's files the inventory names (the
ssh files exist, the state dir can be made) but never at the network.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from itertools import combinations
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrator.core.errors import InventoryError, UsageError
from orchestrator.core.inventory import (
    STATE_DIR_NAME,
    BackupSettings,
    Cluster,
    Host,
    Inventory,
    SSHSettings,
    jump_host_address,
)
from orchestrator.core.inventory_schema import (
    SCHEMA,
    TOP_LEVEL,
    Ctx,
    read_table,
    sub_table,
    unknown_key,
)
from orchestrator.core.inventory_values import HOST_NAME, check_sans
from orchestrator.core.render import resolve_flags
from orchestrator.core.rules import (
    is_known_bad,
    needs_release_pin,
    redact_url,
    version_advisories,
)


def parse_inventory(text: str, path: Path | str) -> Inventory:
    """Validate TOML `text` as if it were the file at `path` (relative paths use its folder)."""
    path = Path(path)
    try:
        raw = tomllib.loads(text.removeprefix(BOM))
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(path, "", f"TOML syntax error: {exc}") from None
    except RecursionError:
        raise InventoryError(path, "", TOO_DEEP) from None
    return _build(raw, Ctx(path))


BOM = "\ufeff"  # a UTF-8 byte order mark (some Windows editors write one): accepted, kept
TOO_DEEP = "TOML syntax error: values nested too deeply (arrays or tables inside each other)"
MAX_HOSTS = 99
"""More members than any etcd cluster should have (etcd recommends 3, 5 or 7)."""


def _build(raw: Mapping[str, Any], ctx: Ctx) -> Inventory:
    for key in raw:
        if key not in TOP_LEVEL:
            raise ctx.error(key, unknown_key(key, TOP_LEVEL, ""))
    cluster = _build_cluster(sub_table(raw, "cluster", ctx, required=True), ctx)
    ssh = _build_ssh(sub_table(raw, "ssh", ctx, required=False), ctx)
    hosts = _build_hosts(raw.get("hosts"), cluster, ssh, ctx)
    backup = BackupSettings(
        **read_table(sub_table(raw, "backup", ctx, required=False), SCHEMA["backup"], "backup", ctx)
    )
    return Inventory(
        path=ctx.abspath,
        cluster=cluster,
        ssh=ssh,
        hosts=hosts,
        warnings=_warnings(cluster, hosts),
        backup=backup,
    )


def _build_cluster(raw: Mapping[str, Any], ctx: Ctx) -> Cluster:
    values = read_table(raw, SCHEMA["cluster"], "cluster", ctx)
    if values["state_dir"] is None:
        values["state_dir"] = ctx.folder / STATE_DIR_NAME / values["name"]
    _check_state_dir(values["state_dir"], ctx)
    cluster = Cluster(**values)
    _check_ports(cluster, ctx)
    _check_dirs(cluster, ctx)
    _check_cert_days(cluster, ctx)
    if "renew_within_days" in raw and cluster.renew_within_days >= cluster.cert_days:
        raise ctx.error(
            "cluster.renew_within_days",
            f"{cluster.renew_within_days} is not less than cluster.cert_days "
            f"({cluster.cert_days}): every certificate would be due for renewal at once",
        )
    _check_release(cluster, ctx)
    try:  # the flags as etcd_version spells them; `upgrade` checks them for its target
        resolve_flags(cluster.flags, cluster.etcd_version)
    except UsageError as exc:
        raise InventoryError(ctx.abspath, "", str(exc)) from None
    return cluster


_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


def _check_state_dir(state: Path, ctx: Ctx) -> None:
    """The state dir, or the first folder above it that exists, must be a writable folder
    (no dangling link on the way, not in /proc, /sys or /dev)."""
    key = "cluster.state_dir"
    for path in (state, *state.parents):
        if path.is_symlink() and not path.exists():
            raise ctx.error(key, f"{path} is a link to {os.readlink(path)}, which does not exist")
    real = Path(os.path.realpath(state))
    pseudo = next((p for p in _PSEUDO_FILESYSTEMS if real.is_relative_to(p)), None)
    if pseudo is not None:
        raise ctx.error(
            key,
            f"{state} is inside {pseudo}, which holds no files: use a private folder "
            "(the default is .etcd-deploy/<cluster name> next to the inventory)",
        )
    blocked = next((p for p in (state, *state.parents) if p.exists()), None)
    if blocked is None:
        return
    if not blocked.is_dir():
        raise ctx.error(key, f"{blocked} is a file, not a folder")
    if blocked != state and not os.access(blocked, os.W_OK | os.X_OK):
        raise ctx.error(key, f"{state} cannot be created: {blocked} is not writable")


def _check_ports(cluster: Cluster, ctx: Ctx) -> None:
    if cluster.client_port == cluster.peer_port:
        raise ctx.error(
            "cluster.peer_port",
            f"must differ from cluster.client_port (both are {cluster.client_port})",
        )
    if cluster.metrics != "off" and cluster.metrics_port in (
        cluster.client_port,
        cluster.peer_port,
    ):
        raise ctx.error(
            "cluster.metrics_port",
            f"must differ from cluster.client_port and cluster.peer_port "
            f"({cluster.metrics_port} is taken)",
        )


def _check_dirs(cluster: Cluster, ctx: Ctx) -> None:
    """data_dir, install_dir and config_dir must be distinct and must not nest."""
    keys = ("data_dir", "install_dir", "config_dir")
    for first, second in combinations(keys, 2):
        a = PurePosixPath(getattr(cluster, first))
        b = PurePosixPath(getattr(cluster, second))
        if a == b:
            raise ctx.error(f"cluster.{second}", f"must differ from cluster.{first} ({a})")
        if b.is_relative_to(a) or a.is_relative_to(b):
            inner, outer = (second, first) if b.is_relative_to(a) else (first, second)
            raise ctx.error(
                f"cluster.{second}",
                f"cluster.{inner} ({getattr(cluster, inner)}) is inside cluster.{outer} "
                f"({getattr(cluster, outer)}); data_dir, install_dir and config_dir "
                "must not nest",
            )


def _check_cert_days(cluster: Cluster, ctx: Ctx) -> None:
    if cluster.cert_days > cluster.ca_days:
        raise ctx.error(
            "cluster.cert_days",
            f"{cluster.cert_days} is more than cluster.ca_days ({cluster.ca_days}); "
            "a certificate cannot outlive its CA",
        )


def _check_release(cluster: Cluster, ctx: Ctx) -> None:
    """A plain-http release_url on another machine needs the tarball's sha256 pinned."""
    if not needs_release_pin(cluster.release_url):
        return
    version = str(cluster.etcd_version)
    if any(key.partition("/")[0] == version for key in cluster.release_sha256):
        return
    raise ctx.error(
        "cluster.release_url",
        f"{redact_url(cluster.release_url)} is plain http:// on another machine: anyone on "
        "the way can change the tarball and its SHA256SUMS; use https://, or pin the "
        f'tarball\'s sha256 in cluster.release_sha256 ("{version}/amd64" = "<sha256>")',
    )


def _build_ssh(raw: Mapping[str, Any], ctx: Ctx) -> SSHSettings:
    ssh = SSHSettings(**read_table(raw, SCHEMA["ssh"], "ssh", ctx))
    for key in ("identity_file", "config_file", "known_hosts"):
        local = getattr(ssh, key)
        if local is not None and local.is_dir():
            raise ctx.error(f"ssh.{key}", f"{local} is a folder, not a file")
        if local is not None and key != "known_hosts" and not local.is_file():
            raise ctx.error(f"ssh.{key}", f"file not found: {local}")
    if ssh.identity_file is not None and _is_public_key(ssh.identity_file):
        raise ctx.error(
            "ssh.identity_file",
            f"{ssh.identity_file} is a public key: identity_file names the private key "
            f"(usually the same name without .pub)",
        )
    if ssh.host_key_check == "strict" and not ssh.known_hosts.is_file():
        raise ctx.error(
            "ssh.known_hosts",
            f'{ssh.known_hosts} does not exist; with host_key_check = "strict" every host '
            "key must already be in it (ssh-keyscan HOST >> FILE, after checking the keys), "
            'or set ssh.host_key_check = "accept-new" to record keys on first connect',
        )
    return ssh


def _is_public_key(path: Path) -> bool:
    """A .pub file, or an OpenSSH public key line ("ssh-ed25519 AAAA...")."""
    if path.suffix == ".pub":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return False  # paramiko says why when it reads the key
    return head.startswith((b"ssh-", b"ecdsa-sha2-", b"sk-ssh-", b"sk-ecdsa-"))


def _host_where(index: int, raw: Any) -> str:
    """The key prefix: "hosts[1]", or "hosts[1] (etcd2)" when the entry has a valid name."""
    name = raw.get("name") if isinstance(raw, dict) else None
    if isinstance(name, str) and HOST_NAME.fullmatch(name):
        return f"hosts[{index}] ({name})"
    return f"hosts[{index}]"


def _build_hosts(raw: Any, cluster: Cluster, ssh: SSHSettings, ctx: Ctx) -> tuple[Host, ...]:
    if raw is None or raw == []:
        raise ctx.error("hosts", "no hosts: add at least one [[hosts]] table (name, address)")
    if not isinstance(raw, list) or not all(isinstance(h, dict) for h in raw):
        raise ctx.error("hosts", "must be an array of tables: write each host as [[hosts]]")
    if len(raw) > MAX_HOSTS:
        raise ctx.error(
            "hosts",
            f"{len(raw)} hosts: etcd-deploy manages at most {MAX_HOSTS} members "
            "(etcd recommends 3, 5 or 7; more members make every write slower)",
        )
    hosts: list[Host] = []
    wheres: list[str] = []
    for index, entry in enumerate(raw):
        where = _host_where(index, entry)
        values = read_table(entry, SCHEMA["hosts"], where, ctx)
        hosts.append(
            Host(
                name=values["name"],
                address=values["address"],
                etcd_address=values["etcd_address"] or values["address"],
                ssh_port=values["ssh_port"] if values["ssh_port"] is not None else ssh.port,
                ssh_user=values["ssh_user"] or ssh.user,
                extra_sans=check_sans(cluster.extra_sans + values["extra_sans"]),
            )
        )
        wheres.append(where)
    _check_unique_hosts(raw, hosts, wheres, ctx)
    _check_privileges(raw, hosts, wheres, ssh, ctx)
    _check_ssh_collisions(hosts, wheres, cluster, ssh, ctx)
    return tuple(hosts)


def _check_ssh_collisions(
    hosts: list[Host], wheres: list[str], cluster: Cluster, ssh: SSHSettings, ctx: Ctx
) -> None:
    """etcd's ports must not be a host's SSH port; the jump host must not be a member."""
    for i, host in enumerate(hosts):
        for key in ("client_port", "peer_port"):
            if getattr(cluster, key) == host.ssh_port:
                raise ctx.error(
                    f"cluster.{key}",
                    f"{host.ssh_port} is the SSH port of {wheres[i]}: etcd and sshd cannot "
                    "listen on the same port",
                )
    if ssh.jump_host is None:
        return
    jump = _address_key(jump_host_address(ssh.jump_host))
    for i, host in enumerate(hosts):
        if jump in (_address_key(host.address), _address_key(host.etcd_address)):
            raise ctx.error(
                "ssh.jump_host",
                f"{ssh.jump_host} is {wheres[i]} itself: a member cannot be the jump host to "
                "the cluster (remove ssh.jump_host, or use another machine)",
            )


def _address_key(address: str) -> str:
    """Comparison form: IPs are canonical already (an IPv4-mapped IPv6 address compares as
    its IPv4 address); DNS names compare case-insensitively."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address.lower()
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


def _check_unique_hosts(
    raw: list[dict[str, Any]], hosts: list[Host], wheres: list[str], ctx: Ctx
) -> None:
    """Names (case-insensitive), SSH targets and etcd addresses must be unique."""
    names: dict[str, int] = {}
    targets: dict[tuple[str, int], int] = {}
    etcd_addresses: dict[str, int] = {}
    for i, host in enumerate(hosts):
        first = names.setdefault(host.name.lower(), i)
        if first != i:
            raise ctx.error(
                f"{wheres[i]}.name", f"duplicate host name {host.name!r} (also {wheres[first]})"
            )
        first = targets.setdefault((_address_key(host.address), host.ssh_port), i)
        if first != i:
            raise ctx.error(
                f"{wheres[i]}.address",
                f"{host.address} port {host.ssh_port} is already the SSH target of {wheres[first]}",
            )
        first = etcd_addresses.setdefault(_address_key(host.etcd_address), i)
        if first != i:
            key = "etcd_address" if "etcd_address" in raw[i] else "address"
            raise ctx.error(
                f"{wheres[i]}.{key}",
                f"etcd address {host.etcd_address} is already used by {wheres[first]}; "
                "each member needs its own etcd_address",
            )


def _check_privileges(
    raw: list[dict[str, Any]],
    hosts: list[Host],
    wheres: list[str],
    ssh: SSHSettings,
    ctx: Ctx,
) -> None:
    """etcd-deploy needs root on every host: a non-root SSH user needs ssh.sudo = true."""
    if ssh.sudo:
        return
    for i, host in enumerate(hosts):
        if host.ssh_user != "root":
            key = f"{wheres[i]}.ssh_user" if "ssh_user" in raw[i] else "ssh.user"
            raise ctx.error(
                key,
                f"user {host.ssh_user!r} is not root: set ssh.sudo = true "
                "(etcd-deploy needs root on every host)",
            )


def _warnings(cluster: Cluster, hosts: tuple[Host, ...]) -> tuple[str, ...]:
    found: list[str] = []
    count = len(hosts)
    if count % 2 == 0:
        found.append(
            f"{count} members tolerate no more failures than {count - 1}; use an odd count"
        )
    bad = is_known_bad(cluster.etcd_version)
    if bad:
        found.append(f"etcd {cluster.etcd_version} is a known-bad release: {bad}")
    found += [
        f"etcd_version {cluster.etcd_version}: {a}"
        for a in version_advisories(cluster.etcd_version)
    ]
    return tuple(found)
