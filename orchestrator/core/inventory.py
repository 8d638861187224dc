"""The TOML inventory: model, validation, derived URLs and comment-preserving write-back.

`load_inventory` is pure logic: it reads one file (and checks that local files it names
exist) but never touches the network. Validation is table-driven: each TOML table has a
schema of key -> `_Key(kind, default, check)`; cross-key rules live in small functions.
Every error is an `InventoryError(path, key, message)` naming the file and the key.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import posixpath
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from itertools import combinations
from pathlib import Path, PurePosixPath
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import ParseError
from tomlkit.items import AoT, Comment, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from orchestrator.adapters.localfs import write_atomic
from orchestrator.core.errors import InventoryError, UsageError
from orchestrator.core.rules import (
    FLAG_NAME,
    SAFE_REMOTE_PATH,
    check_version,
    flag_problem,
    flag_value_problem,
    is_known_bad,
    needs_release_pin,
    redact_url,
    release_pin_key,
    release_pin_problem,
    system_folder_problem,
)

DEFAULT_RELEASE_URL = "https://github.com/etcd-io/etcd/releases/download"
STATE_DIR_NAME = ".etcd-deploy"
_DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts").expanduser()
"""Default state lives in <inventory folder>/.etcd-deploy/<cluster name>."""


# --------------------------------------------------------------------------- model


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
    etcd_version: str
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

    def release_pin(self, version: str, arch: str) -> str | None:
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


# --------------------------------------------------------------------------- loading


def load_inventory(path: Path | str) -> Inventory:
    """Read and validate an inventory; raises InventoryError naming the file and key."""
    path = Path(path)
    return parse_inventory(_read_text(path), path)


def parse_inventory(text: str, path: Path | str) -> Inventory:
    """Validate TOML `text` as if it were the file at `path` (relative paths use its folder)."""
    path = Path(path)
    try:
        raw = tomllib.loads(text.removeprefix(_BOM))
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(path, "", f"TOML syntax error: {exc}") from None
    except RecursionError:
        raise InventoryError(path, "", _TOO_DEEP) from None
    return _build(raw, _Ctx(path))


_BOM = "\ufeff"  # a UTF-8 byte order mark (some Windows editors write one): accepted, kept
_TOO_DEEP = "TOML syntax error: values nested too deeply (arrays or tables inside each other)"
MAX_HOSTS = 99
"""More members than any etcd cluster should have (etcd recommends 3, 5 or 7)."""


def _read_text(path: Path) -> str:
    """The file's text, newlines untouched; InventoryError if it cannot be read."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read()
    except FileNotFoundError:
        raise InventoryError(path, "", "inventory file not found") from None
    except IsADirectoryError:
        raise InventoryError(path, "", "is a folder, not an inventory file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(path, "", f"cannot read the inventory: {exc}") from None


class _Bad(Exception):
    """A value is invalid; `sub` extends the key path (".flag-name" or "[2]")."""

    def __init__(self, message: str, sub: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.sub = sub


class _Ctx:
    """Where we are: the inventory path (as given) and its absolute folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.abspath = Path(os.path.abspath(path))
        self.folder = self.abspath.parent

    def error(self, key: str, message: str) -> InventoryError:
        return InventoryError(self.path, key, message)


# --------------------------------------------------------------------------- value checks

_CLUSTER_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_HOST_NAME = re.compile(
    r"(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_JUMP_HOST = re.compile(
    r"(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]*\]|[^:@\[\]]+)(?::(?P<port>[^:]*))?"
)


def _is_dns_name(value: str, wildcard: bool = False) -> bool:
    """RFC 1123 host name (optionally "*." first); an all-digit last label is rejected."""
    if wildcard and value.startswith("*."):
        value = value[2:]
    if not value or len(value) > 253:
        return False
    labels = value.split(".")
    if labels[-1].isdigit():
        return False
    return all(_DNS_LABEL.fullmatch(label) for label in labels)


def _address(value: str, _folder: Path | None = None) -> str:
    """An IPv4/IPv6 literal (returned in canonical form) or a DNS name."""
    if value.startswith("[") and value.endswith("]"):
        raise _Bad(f"write IPv6 addresses without brackets: {value[1:-1]!r}")
    if "%" in value:
        raise _Bad(f"{value!r}: IPv6 zone ids (%...) are not supported")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        if ip.is_unspecified or ip.is_multicast or str(ip) == "255.255.255.255":
            kind = "a wildcard" if ip.is_unspecified else "a multicast or broadcast address"
            raise _Bad(f"{value} is {kind}, not the address of one host")
        return str(ip)
    if _is_dns_name(value):
        return value
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and (_is_dns_name(host) or is_ip(host)):
        raise _Bad(f"{value!r}: put the SSH port in ssh_port, not in the address")
    raise _Bad(f"{value!r} is not a valid IPv4 address, IPv6 address or DNS name")


def is_ip(value: str) -> bool:
    """True for an IPv4 or IPv6 literal."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _sans(values: Iterable[str], _folder: Path | None = None) -> tuple[str, ...]:
    """Extra subject alternative names: IPs (canonical) or DNS names ("*." allowed)."""
    out: list[str] = []
    for i, value in enumerate(values):
        if is_ip(value):
            value = str(ipaddress.ip_address(value))
        elif not _is_dns_name(value, wildcard=True):
            raise _Bad(f"{value!r} is not a valid IP address or DNS name", f"[{i}]")
        if value not in out:
            out.append(value)
    return tuple(out)


def _cluster_name(value: str, _folder: Path) -> str:
    if not _CLUSTER_NAME.fullmatch(value):
        raise _Bad(
            f"invalid cluster name {value!r}: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _etcd_version(value: str, _folder: Path) -> str:
    """`rules.version_problem`: the same rule as `upgrade VERSION` and the release fetch."""
    try:
        check_version(value)
    except ValueError as exc:
        raise _Bad(str(exc)) from None
    return value


def _release_url(value: str, folder: Path) -> str:
    """http(s)://host/..., file:///abs, or a local folder (made absolute); no trailing /."""
    scheme = _SCHEME.match(value)
    if scheme is None:
        if "\n" in value:
            raise _Bad("must be a single line")
        return os.path.abspath(folder / Path(value).expanduser())
    name = scheme[1].lower()
    rest = value[scheme.end() :]
    shown = redact_url(value)
    if name in ("http", "https"):
        if not rest or rest.startswith("/") or any(c.isspace() for c in rest):
            raise _Bad(f"{shown!r} is not a valid URL (expected {name}://host/path)")
    elif name == "file":
        if not rest.startswith("/"):
            raise _Bad(f"{shown!r}: a file:// URL needs an absolute path (file:///srv/etcd)")
    else:
        raise _Bad(
            f"unsupported scheme {name + '://'!r}: use https://, http://, file:// or a local folder"
        )
    stripped = value.rstrip("/")
    return value if stripped.endswith(":") else stripped


def _release_pins(table: Mapping[str, Any], _folder: Path) -> dict[str, str]:
    """cluster.release_sha256: {"VERSION/ARCH" = "<sha256 of the tarball>"}."""
    out: dict[str, str] = {}
    for key, value in table.items():
        problem = release_pin_problem(key, value)
        if problem is not None:
            raise _Bad(problem, f'."{key}"' if "." in key else f".{key}")
        out[key] = str(value).lower()
    return out


def _port(value: int, _folder: Path) -> int:
    if not 1 <= value <= 65535:
        raise _Bad(f"must be between 1 and 65535, not {value}")
    return value


def _between(minimum: int, maximum: int) -> Callable[[int, Path], int]:
    def check(value: int, _folder: Path) -> int:
        if value < minimum:
            raise _Bad(f"must be at least {minimum}, not {value}")
        if value > maximum:
            raise _Bad(f"must be at most {maximum} (100 years), not {value}")
        return value

    return check


MAX_DAYS = 36500


def _one_of(*choices: str) -> Callable[[str, Path], str]:
    def check(value: str, _folder: Path) -> str:
        if value not in choices:
            wanted = " or ".join(f'"{c}"' for c in choices)
            raise _Bad(f"must be {wanted}, not {value!r}")
        return value

    return check


def _remote_dir(key: str) -> Callable[[str, Path], str]:
    """An absolute folder on the hosts, never a system folder (`rules.system_folder`)."""

    def check(value: str, _folder: Path) -> str:
        if not value.startswith("/"):
            raise _Bad(f"must be an absolute path (starting with /), not {value!r}")
        if any(c.isspace() for c in value):
            raise _Bad(f"must not contain whitespace: {value!r}")
        if not SAFE_REMOTE_PATH.fullmatch(value):
            raise _Bad(f"{value!r}: use only letters, digits and . _ - + @ / in host paths")
        if ".." in PurePosixPath(value).parts:
            raise _Bad(f"must not contain '..': {value!r}")
        norm = posixpath.normpath(re.sub("/+", "/", value))
        if norm == "/":
            raise _Bad('must not be "/"')
        problem = system_folder_problem(norm, key)
        if problem is not None:
            raise _Bad(problem)
        return norm

    return check


def _local_path(value: str, folder: Path) -> Path:
    """A path on the control machine: ~ expanded, relative to the inventory's folder."""
    if "\n" in value:
        raise _Bad("must be a single line")
    return Path(os.path.abspath(folder / Path(value).expanduser()))


def _user(value: str, _folder: Path | None = None) -> str:
    if not _USER.fullmatch(value):
        raise _Bad(f"invalid user name {value!r}")
    return value


def _host_name(value: str, _folder: Path) -> str:
    """The member's name, also a DNS name in its server and peer certificates."""
    if not _HOST_NAME.fullmatch(value) or is_ip(value):
        raise _Bad(
            f"invalid host name {value!r}: it is the member's name and a DNS name in its "
            "certificates; use up to 63 letters, digits, '-' and '.', each dot-separated "
            "part starting and ending with a letter or digit (no '_')"
        )
    return value


def jump_host_address(value: str) -> str:
    """The host part of a valid ssh.jump_host ("admin@[fd00::1]:22" -> "fd00::1")."""
    match = _JUMP_HOST.fullmatch(value)
    host = match["host"] if match else value
    return host[1:-1] if host.startswith("[") else host


def _jump_host(value: str, _folder: Path) -> str:
    """[user@]host[:port], IPv6 hosts in brackets; returned unchanged."""
    form = "expected [user@]host[:port], IPv6 in brackets: admin@[fd00::1]:22"
    match = _JUMP_HOST.fullmatch(value)
    if match is None:
        raise _Bad(f"invalid jump host {value!r}: {form}")
    if match["user"] is not None and not _USER.fullmatch(match["user"]):
        raise _Bad(f"invalid user {match['user']!r} in jump host {value!r}")
    host = match["host"]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _Bad(f"invalid IPv6 address {host!r} in jump host {value!r}") from None
    elif not (is_ip(host) or _is_dns_name(host)):
        raise _Bad(f"invalid host {host!r} in jump host {value!r}: {form}")
    port = match["port"]
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise _Bad(f"invalid port {port!r} in jump host {value!r} (1-65535)")
    return value


def _flags(table: Mapping[str, Any], _folder: Path) -> dict[str, str]:
    """[cluster.flags]: etcd flag name -> value rendered as a string."""
    out: dict[str, str] = {}
    for name, value in table.items():
        sub = f".{name}"
        problem = flag_problem(name)
        if problem is not None:
            raise _Bad(problem, sub)
        out[name] = _flag_value(value, sub)
    return out


def _flag_value(value: Any, sub: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        problem = flag_value_problem(value)
        if problem is not None:
            raise _Bad(problem, sub)
        return value
    raise _Bad(
        f"must be a string, number or boolean, not {_describe(value)} "
        '(write lists as one comma-separated string: "a,b")',
        sub,
    )


# --------------------------------------------------------------------------- schemas

_REQUIRED: Any = object()
Check = Callable[[Any, Path], Any]


@dataclass(frozen=True)
class _Key:
    """One key of a table: its TOML kind, default (_REQUIRED or None: absent) and check."""

    kind: str  # "str" | "int" | "bool" | "str_list" | "table"
    default: Any = _REQUIRED
    check: Check | None = None


_CLUSTER: dict[str, _Key] = {
    "name": _Key("str", _REQUIRED, _cluster_name),
    "etcd_version": _Key("str", _REQUIRED, _etcd_version),
    "release_url": _Key("str", DEFAULT_RELEASE_URL, _release_url),
    "release_sha256": _Key("table", {}, _release_pins),
    "client_port": _Key("int", 2379, _port),
    "peer_port": _Key("int", 2380, _port),
    "data_dir": _Key("str", "/var/lib/etcd", _remote_dir("data_dir")),
    "install_dir": _Key("str", "/opt/bin", _remote_dir("install_dir")),
    "config_dir": _Key("str", "/etc/etcd", _remote_dir("config_dir")),
    "cert_days": _Key("int", 365, _between(1, MAX_DAYS)),
    "ca_days": _Key("int", 3650, _between(1, MAX_DAYS)),
    "extra_sans": _Key("str_list", (), _sans),
    "state_dir": _Key("str", None, _local_path),
    "bootstrap": _Key("str", "learner", _one_of("learner", "parallel")),
    "renew_within_days": _Key("int", 30, _between(0, MAX_DAYS)),
    "flags": _Key("table", {}, _flags),
}

_SSH: dict[str, _Key] = {
    "user": _Key("str", "root", _user),
    "identity_file": _Key("str", None, _local_path),
    "known_hosts": _Key("str", "~/.ssh/known_hosts", _local_path),
    "port": _Key("int", 22, _port),
    "sudo": _Key("bool", False),
    "jump_host": _Key("str", None, _jump_host),
    "host_key_check": _Key("str", "strict", _one_of("strict", "accept-new")),
    "config_file": _Key("str", None, _local_path),
}

_HOST: dict[str, _Key] = {
    "name": _Key("str", _REQUIRED, _host_name),
    "address": _Key("str", _REQUIRED, _address),
    "etcd_address": _Key("str", None, _address),
    "ssh_port": _Key("int", None, _port),
    "ssh_user": _Key("str", None, _user),
    "extra_sans": _Key("str_list", (), _sans),
}

_TOP_LEVEL = ("cluster", "ssh", "hosts")

SCHEMA: Mapping[str, Mapping[str, _Key]] = {"cluster": _CLUSTER, "ssh": _SSH, "hosts": _HOST}
"""Every documented key per table (for docs and tests); defaults of None mean "unset"."""

_KIND_NAMES = {
    "str": "a string",
    "int": "an integer",
    "bool": "true or false",
    "str_list": "an array of strings",
    "table": "a table",
}


def _describe(value: Any) -> str:
    """A short TOML-ish description of a value, for "must be X, not Y" messages."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f'a string ("{value}")' if len(value) <= 40 else "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return f"a date/time ({value.isoformat()})"
    return type(value).__name__


def _check_kind(kind: str, value: Any) -> None:
    """Raise _Bad unless `value` has the TOML kind (bool is not an int; "" is not a string)."""
    expected = _KIND_NAMES[kind]
    if kind == "int":
        ok = type(value) is int
    elif kind == "str":
        ok = isinstance(value, str)
        if ok and not value:
            raise _Bad("must not be empty (remove the key to use the default)")
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "table":
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, list)
        if ok:
            for i, item in enumerate(value):
                if not isinstance(item, str) or not item:
                    what = "an empty string" if item == "" else _describe(item)
                    raise _Bad(f"must be a non-empty string, not {what}", f"[{i}]")
    if not ok:
        quoted = isinstance(value, str) and (
            (kind == "int" and value.strip().isdigit())
            or (kind == "bool" and value in ("true", "false"))
        )
        hint = "; remove the quotes" if quoted else ""
        raise _Bad(f"must be {expected}, not {_describe(value)}{hint}")


def _unknown_key(key: str, known: Iterable[str], where: str) -> str:
    """The "unknown key 'x'" message plus the closest known key, or where misplaced keys belong."""
    message = f"unknown key {key!r}"
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    if where == "cluster" and FLAG_NAME.fullmatch(key) and "-" in key:
        return f"{message}; etcd flags go in the [cluster.flags] table"
    return message


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _read_table(
    raw: Mapping[str, Any], schema: Mapping[str, _Key], where: str, ctx: _Ctx
) -> dict[str, Any]:
    """Check `raw` against `schema`; returns key -> checked value (defaults filled in)."""
    for key in raw:
        if key not in schema:
            raise ctx.error(_join(where, key), _unknown_key(key, schema, where))
    values: dict[str, Any] = {}
    for key, spec in schema.items():
        keypath = _join(where, key)
        try:
            if key in raw:
                value = raw[key]
                _check_kind(spec.kind, value)
            elif spec.default is _REQUIRED:
                raise _Bad("required key is missing")
            else:
                value = spec.default
            if value is not None and spec.check is not None:
                value = spec.check(value, ctx.folder)
        except _Bad as bad:
            raise ctx.error(keypath + bad.sub, bad.message) from None
        values[key] = value
    return values


def _sub_table(raw: Mapping[str, Any], key: str, ctx: _Ctx, required: bool) -> dict[str, Any]:
    """A top-level table, {} when absent and optional."""
    if key not in raw:
        if required:
            raise ctx.error(key, f"missing the [{key}] table")
        return {}
    value = raw[key]
    if not isinstance(value, dict):
        raise ctx.error(key, f"must be a table ([{key}]), not {_describe(value)}")
    return value


# --------------------------------------------------------------------------- building


def _build(raw: Mapping[str, Any], ctx: _Ctx) -> Inventory:
    for key in raw:
        if key not in _TOP_LEVEL:
            raise ctx.error(key, _unknown_key(key, _TOP_LEVEL, ""))
    cluster = _build_cluster(_sub_table(raw, "cluster", ctx, required=True), ctx)
    ssh = _build_ssh(_sub_table(raw, "ssh", ctx, required=False), ctx)
    hosts = _build_hosts(raw.get("hosts"), cluster, ssh, ctx)
    return Inventory(
        path=ctx.abspath,
        cluster=cluster,
        ssh=ssh,
        hosts=hosts,
        warnings=_warnings(cluster, hosts),
    )


def _build_cluster(raw: Mapping[str, Any], ctx: _Ctx) -> Cluster:
    values = _read_table(raw, _CLUSTER, "cluster", ctx)
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
    return cluster


_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


def _check_state_dir(state: Path, ctx: _Ctx) -> None:
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


def _check_ports(cluster: Cluster, ctx: _Ctx) -> None:
    if cluster.client_port == cluster.peer_port:
        raise ctx.error(
            "cluster.peer_port",
            f"must differ from cluster.client_port (both are {cluster.client_port})",
        )


def _check_dirs(cluster: Cluster, ctx: _Ctx) -> None:
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


def _check_cert_days(cluster: Cluster, ctx: _Ctx) -> None:
    if cluster.cert_days > cluster.ca_days:
        raise ctx.error(
            "cluster.cert_days",
            f"{cluster.cert_days} is more than cluster.ca_days ({cluster.ca_days}); "
            "a certificate cannot outlive its CA",
        )


def _check_release(cluster: Cluster, ctx: _Ctx) -> None:
    """A plain-http release_url on another machine needs the tarball's sha256 pinned."""
    if not needs_release_pin(cluster.release_url):
        return
    version = cluster.etcd_version
    if any(key.partition("/")[0] == version for key in cluster.release_sha256):
        return
    raise ctx.error(
        "cluster.release_url",
        f"{redact_url(cluster.release_url)} is plain http:// on another machine: anyone on "
        "the way can change the tarball and its SHA256SUMS; use https://, or pin the "
        f'tarball\'s sha256 in cluster.release_sha256 ("{version}/amd64" = "<sha256>")',
    )


def _build_ssh(raw: Mapping[str, Any], ctx: _Ctx) -> SSHSettings:
    ssh = SSHSettings(**_read_table(raw, _SSH, "ssh", ctx))
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
    if isinstance(name, str) and _HOST_NAME.fullmatch(name):
        return f"hosts[{index}] ({name})"
    return f"hosts[{index}]"


def _build_hosts(raw: Any, cluster: Cluster, ssh: SSHSettings, ctx: _Ctx) -> tuple[Host, ...]:
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
        values = _read_table(entry, _HOST, where, ctx)
        hosts.append(
            Host(
                name=values["name"],
                address=values["address"],
                etcd_address=values["etcd_address"] or values["address"],
                ssh_port=values["ssh_port"] if values["ssh_port"] is not None else ssh.port,
                ssh_user=values["ssh_user"] or ssh.user,
                extra_sans=_sans(cluster.extra_sans + values["extra_sans"]),
            )
        )
        wheres.append(where)
    _check_unique_hosts(raw, hosts, wheres, ctx)
    _check_privileges(raw, hosts, wheres, ssh, ctx)
    _check_ssh_collisions(hosts, wheres, cluster, ssh, ctx)
    return tuple(hosts)


def _check_ssh_collisions(
    hosts: list[Host], wheres: list[str], cluster: Cluster, ssh: SSHSettings, ctx: _Ctx
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
    raw: list[dict[str, Any]], hosts: list[Host], wheres: list[str], ctx: _Ctx
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
    ctx: _Ctx,
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
    return tuple(found)


# --------------------------------------------------------------------------- write-back


def add_host_to_file(path: Path, name: str, address: str, etcd_address: str | None = None) -> None:
    """Append a [[hosts]] entry, keeping comments and layout; refuse if the result is invalid."""
    path = Path(path)
    doc = _read_document(path)
    entry = tomlkit.table()
    entry.add("name", name)
    entry.add("address", address)
    if etcd_address is not None:
        entry.add("etcd_address", etcd_address)
    if "hosts" not in doc:
        doc.append("hosts", tomlkit.aot())
    hosts = _hosts_aot(doc, path)
    if hosts.body:
        tail = _tail_container(hosts.body[-1])
        if tail is not None and tail.body and not isinstance(tail.body[-1][1], Whitespace):
            tail.body.append((None, tomlkit.ws("\n")))
    hosts.append(entry)
    _write_validated(path, doc)


def remove_host_from_file(path: Path, name: str, *, check_only: bool = False) -> None:
    """Delete the [[hosts]] entry `name` and the comment block right above it.

    `check_only`: do everything but the write, so a caller can find out first that the edit
    will work (remove-node checks before it changes the cluster).
    """
    path = Path(path)
    doc = _read_document(path)
    hosts = _hosts_aot(doc, path) if "hosts" in doc else tomlkit.aot()
    tables = hosts.body
    names = [t.get("name") for t in tables]
    if name not in names:
        known = ", ".join(str(n) for n in names)
        raise UsageError(f"{path}: no host named {name!r} (hosts: {known})")
    index = names.index(name)
    previous = tables[index - 1] if index > 0 else _item_before(doc, "hosts")
    _move_comments_on_removal(
        _tail_container(previous), tables[index].value, last=index == len(tables) - 1
    )
    del hosts[index]
    _write_validated(path, doc, check_only=check_only)


def set_cluster_key_in_file(path: Path, key: str, value: Any, *, check_only: bool = False) -> None:
    """Set cluster.<key> (e.g. etcd_version), keeping its comment; refuse invalid results.
    `check_only`: everything but the write (upgrade checks its final edit first)."""
    path = Path(path)
    doc = _read_document(path)
    cluster = doc.get("cluster")
    if cluster is None:
        raise InventoryError(path, "cluster", "missing the [cluster] table")
    if isinstance(value, Path):
        value = str(value)
    if key in cluster or not isinstance(cluster, Table):
        cluster[key] = value
    else:
        _insert_after_last_value(cluster, key, value)
    _write_validated(path, doc, check_only=check_only)


def _hosts_aot(doc: TOMLDocument, path: Path) -> AoT:
    """The [[hosts]] array of tables (an inline `hosts = [...]` cannot be edited)."""
    hosts = doc["hosts"]
    if not isinstance(hosts, AoT):
        raise InventoryError(
            path, "hosts", "to be edited by etcd-deploy, write each host as a [[hosts]] table"
        )
    return hosts


def _read_document(path: Path) -> TOMLDocument:
    try:
        return tomlkit.parse(_read_text(path).removeprefix(_BOM))
    except ParseError as exc:
        raise InventoryError(path, "", f"TOML syntax error: {exc}") from None
    except RecursionError:
        raise InventoryError(path, "", _TOO_DEEP) from None


def _write_validated(path: Path, doc: TOMLDocument, *, check_only: bool = False) -> None:
    """Validate the edited document exactly as load_inventory would, then write atomically,
    in the file's own style: a byte order mark and CRLF line ends are kept."""
    text = _same_style(tomlkit.dumps(doc), _read_text(path))
    parse_inventory(text, path)
    if not check_only:
        atomic_write_text(path, text)


def _same_style(text: str, original: str) -> str:
    """`text` with the BOM and the line ends (CRLF or LF) of `original`."""
    if "\r\n" in original:
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    if original.startswith(_BOM) and not text.startswith(_BOM):
        text = _BOM + text
    return text


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync, os.replace (symlinks followed, the
    file's mode kept)."""
    write_atomic(path, text.encode("utf-8"))


def _item_before(doc: TOMLDocument, key: str) -> Any:
    """The top-level item just before `key` in the document (None if first)."""
    previous = None
    for item_key, item in doc.body:
        if item_key is not None and item_key.key == key:
            return previous
        previous = item
    return None


def _tail_container(item: Any) -> Container | None:
    """The container whose body ends right before the next table header.

    tomlkit stores comments above a `[[hosts]]` header at the end of the previous table
    (or of that table's last sub-table).
    """
    while True:
        if isinstance(item, AoT):
            item = item.body[-1] if item.body else None
        if not isinstance(item, Table):
            return None
        body = item.value.body
        last = body[-1][1] if body else None
        if isinstance(last, Table | AoT):
            item = last
            continue
        return item.value


def _trailing_trivia(body: list[tuple[Any, Any]]) -> int:
    """Index where the trailing run of comments/blank lines of `body` starts."""
    start = len(body)
    while start > 0 and isinstance(body[start - 1][1], Comment | Whitespace):
        start -= 1
    return start


def _header_block_start(body: list[tuple[Any, Any]]) -> int:
    """Index where the comments directly above the next header (no blank line) start."""
    start = len(body)
    while start > 0 and isinstance(body[start - 1][1], Comment):
        start -= 1
    return start


def _move_comments_on_removal(previous: Container | None, removed: Container, last: bool) -> None:
    """Drop the removed host's header comments; keep the next host's (or the file's end).

    Comments directly above a header (no blank line) belong to that header's host.
    """
    if previous is None:
        return
    tail = removed.body[_trailing_trivia(removed.body) :]
    blanks = [i for i, (_, item) in enumerate(tail) if isinstance(item, Whitespace)]
    if last:
        keep = tail[blanks[0] :] if blanks else []
    else:
        keep = tail[blanks[-1] :] if blanks else tail[_header_block_start(tail) :]
    del previous.body[_header_block_start(previous.body) :]
    if keep and previous.body and isinstance(previous.body[-1][1], Whitespace):
        if isinstance(keep[0][1], Whitespace):
            keep = keep[1:]
    elif keep and not isinstance(keep[0][1], Whitespace):
        keep = [(None, tomlkit.ws("\n")), *keep]
    if not keep and last:
        while previous.body and isinstance(previous.body[-1][1], Whitespace):
            previous.body.pop()
    previous.body.extend(keep)


def _insert_after_last_value(table: Table, key: str, value: Any) -> None:
    """Add key = value after the table's last key/value (before comments and sub-tables)."""
    container = table.value
    last_key = None
    for item_key, item in container.body:
        if item_key is not None and not isinstance(item, Table | AoT):
            last_key = item_key
    if last_key is None:
        table[key] = value
    else:
        container._insert_after(last_key, key, value)
