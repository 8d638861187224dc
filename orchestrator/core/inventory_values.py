"""The inventory's value checks, one TOML value at a time: each takes the value (already of
the right TOML kind) and the inventory's folder, and returns the value normalised (canonical
IPs, absolute local paths, normalised host paths) or raises `BadValue`.

`inventory_schema` names the check of every key; the rules themselves (flag names, host
folders, versions, release pins) are defined once, in `orchestrator.core.rules`.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from orchestrator.core.backup_catalog import RECIPIENT_HINT, parse_target, recipient_kind
from orchestrator.core.inventory import JUMP_HOST, is_ip
from orchestrator.core.rules import (
    SAFE_REMOTE_PATH,
    Version,
    check_version,
    flag_problem,
    flag_value_problem,
    redact_url,
    release_pin_problem,
    system_folder_problem,
)


class BadValue(Exception):
    """A value is invalid; `sub` extends the key path (".flag-name" or "[2]")."""

    def __init__(self, message: str, sub: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.sub = sub


_CLUSTER_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
HOST_NAME = re.compile(
    r"(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


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


def check_address(value: str, _folder: Path | None = None) -> str:
    """An IPv4/IPv6 literal (returned in canonical form) or a DNS name."""
    if value.startswith("[") and value.endswith("]"):
        raise BadValue(f"write IPv6 addresses without brackets: {value[1:-1]!r}")
    if "%" in value:
        raise BadValue(f"{value!r}: IPv6 zone ids (%...) are not supported")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        if ip.is_unspecified or ip.is_multicast or str(ip) == "255.255.255.255":
            kind = "a wildcard" if ip.is_unspecified else "a multicast or broadcast address"
            raise BadValue(f"{value} is {kind}, not the address of one host")
        return str(ip)
    if _is_dns_name(value):
        return value
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and (_is_dns_name(host) or is_ip(host)):
        raise BadValue(f"{value!r}: put the SSH port in ssh_port, not in the address")
    raise BadValue(f"{value!r} is not a valid IPv4 address, IPv6 address or DNS name")


def check_sans(values: Iterable[str], _folder: Path | None = None) -> tuple[str, ...]:
    """Extra subject alternative names: IPs (canonical) or DNS names ("*." allowed)."""
    out: list[str] = []
    for i, value in enumerate(values):
        if is_ip(value):
            value = str(ipaddress.ip_address(value))
        elif not _is_dns_name(value, wildcard=True):
            raise BadValue(f"{value!r} is not a valid IP address or DNS name", f"[{i}]")
        if value not in out:
            out.append(value)
    return tuple(out)


def check_cluster_name(value: str, _folder: Path) -> str:
    if not _CLUSTER_NAME.fullmatch(value):
        raise BadValue(
            f"invalid cluster name {value!r}: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def check_etcd_version(value: str, _folder: Path) -> Version:
    """The parsed version (`rules.version_problem`: the same rule as `upgrade VERSION` and
    the release fetch)."""
    try:
        return check_version(value)
    except ValueError as exc:
        raise BadValue(str(exc)) from None


def check_release_url(value: str, folder: Path) -> str:
    """http(s)://host/..., file:///abs, or a local folder (made absolute); no trailing /."""
    scheme = _SCHEME.match(value)
    if scheme is None:
        if "\n" in value:
            raise BadValue("must be a single line")
        return os.path.abspath(folder / Path(value).expanduser())
    name = scheme[1].lower()
    rest = value[scheme.end() :]
    shown = redact_url(value)
    if name in ("http", "https"):
        if not rest or rest.startswith("/") or any(c.isspace() for c in rest):
            raise BadValue(f"{shown!r} is not a valid URL (expected {name}://host/path)")
    elif name == "file":
        if not rest.startswith("/"):
            raise BadValue(f"{shown!r}: a file:// URL needs an absolute path (file:///srv/etcd)")
    else:
        raise BadValue(
            f"unsupported scheme {name + '://'!r}: use https://, http://, file:// or a local folder"
        )
    stripped = value.rstrip("/")
    return value if stripped.endswith(":") else stripped


def check_release_pins(table: Mapping[str, Any], _folder: Path) -> dict[str, str]:
    """cluster.release_sha256: {"VERSION/ARCH" = "<sha256 of the tarball>"}."""
    out: dict[str, str] = {}
    for key, value in table.items():
        problem = release_pin_problem(key, value)
        if problem is not None:
            raise BadValue(problem, f'."{key}"' if "." in key else f".{key}")
        out[key] = str(value).lower()
    return out


def check_port(value: int, _folder: Path) -> int:
    if not 1 <= value <= 65535:
        raise BadValue(f"must be between 1 and 65535, not {value}")
    return value


def between(minimum: int, maximum: int) -> Callable[[int, Path], int]:
    def check(value: int, _folder: Path) -> int:
        if value < minimum:
            raise BadValue(f"must be at least {minimum}, not {value}")
        if value > maximum:
            raise BadValue(f"must be at most {maximum} (100 years), not {value}")
        return value

    return check


MAX_DAYS = 36500


def one_of(*choices: str) -> Callable[[str, Path], str]:
    def check(value: str, _folder: Path) -> str:
        if value not in choices:
            wanted = " or ".join(f'"{c}"' for c in choices)
            raise BadValue(f"must be {wanted}, not {value!r}")
        return value

    return check


def remote_dir(key: str) -> Callable[[str, Path], str]:
    """An absolute folder on the hosts, never a system folder (`rules.system_folder`)."""

    def check(value: str, _folder: Path) -> str:
        if not value.startswith("/"):
            raise BadValue(f"must be an absolute path (starting with /), not {value!r}")
        if any(c.isspace() for c in value):
            raise BadValue(f"must not contain whitespace: {value!r}")
        if not SAFE_REMOTE_PATH.fullmatch(value):
            raise BadValue(f"{value!r}: use only letters, digits and . _ - + @ / in host paths")
        if ".." in PurePosixPath(value).parts:
            raise BadValue(f"must not contain '..': {value!r}")
        norm = posixpath.normpath(re.sub("/+", "/", value))
        if norm == "/":
            raise BadValue('must not be "/"')
        problem = system_folder_problem(norm, key)
        if problem is not None:
            raise BadValue(problem)
        return norm

    return check


def check_local_path(value: str, folder: Path) -> Path:
    """A path on the control machine: ~ expanded, relative to the inventory's folder."""
    if "\n" in value:
        raise BadValue("must be a single line")
    return Path(os.path.abspath(folder / Path(value).expanduser()))


def check_user(value: str, _folder: Path | None = None) -> str:
    if not _USER.fullmatch(value):
        raise BadValue(f"invalid user name {value!r}")
    return value


def check_host_name(value: str, _folder: Path) -> str:
    """The member's name, also a DNS name in its server and peer certificates."""
    if not HOST_NAME.fullmatch(value) or is_ip(value):
        raise BadValue(
            f"invalid host name {value!r}: it is the member's name and a DNS name in its "
            "certificates; use up to 63 letters, digits, '-' and '.', each dot-separated "
            "part starting and ending with a letter or digit (no '_')"
        )
    return value


def check_jump_host(value: str, _folder: Path) -> str:
    """[user@]host[:port], IPv6 hosts in brackets; returned unchanged."""
    form = "expected [user@]host[:port], IPv6 in brackets: admin@[fd00::1]:22"
    match = JUMP_HOST.fullmatch(value)
    if match is None:
        raise BadValue(f"invalid jump host {value!r}: {form}")
    if match["user"] is not None and not _USER.fullmatch(match["user"]):
        raise BadValue(f"invalid user {match['user']!r} in jump host {value!r}")
    host = match["host"]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise BadValue(f"invalid IPv6 address {host!r} in jump host {value!r}") from None
    elif not (is_ip(host) or _is_dns_name(host)):
        raise BadValue(f"invalid host {host!r} in jump host {value!r}: {form}")
    port = match["port"]
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise BadValue(f"invalid port {port!r} in jump host {value!r} (1-65535)")
    return value


def check_flags(table: Mapping[str, Any], _folder: Path) -> dict[str, str]:
    """[cluster.flags]: etcd flag name -> value rendered as a string."""
    out: dict[str, str] = {}
    for name, value in table.items():
        sub = f".{name}"
        problem = flag_problem(name)
        if problem is not None:
            raise BadValue(problem, sub)
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
            raise BadValue(problem, sub)
        return value
    raise BadValue(
        f"must be a string, number or boolean, not {describe(value)} "
        '(write lists as one comma-separated string: "a,b")',
        sub,
    )


def describe(value: Any) -> str:
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


def check_backup_location(value: str, folder: Path) -> str:
    """[backup] to: an s3:// prefix, a file:// URL or a folder (relative to the inventory)."""
    try:
        target = parse_target(value, base=folder)
    except ValueError as exc:
        raise BadValue(str(exc)) from None
    return target.url()


def check_endpoint_url(value: str, _folder: Path) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadValue(f"{value!r}: expected an http(s):// URL of an S3-compatible endpoint")
    if parts.username or parts.password:
        raise BadValue("credentials do not belong in the inventory: use the AWS chain")
    return value.rstrip("/")


def check_region(value: str, _folder: Path) -> str:
    if not re.fullmatch(r"[a-z0-9-]{1,40}", value):
        raise BadValue(f"{value!r}: expected a region name such as eu-west-1")
    return value


def check_profile(value: str, _folder: Path) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.@+-]{1,64}", value):
        raise BadValue(f"{value!r}: expected an AWS profile name")
    return value


def check_recipients(value: list[str], _folder: Path) -> tuple[str, ...]:
    """age recipients (age1...) or SSH public keys; the real parse happens when used."""
    for i, item in enumerate(value):
        if recipient_kind(item) is None:
            raise BadValue(RECIPIENT_HINT, f"[{i}]")
    return tuple(item.strip() for item in value)
