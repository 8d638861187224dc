"""The inventory's schema: per TOML table, each key's kind, default and value check
(`inventory_values`), and `read_table`, which applies them and turns a bad value into an
`InventoryError` naming the file and the key ("hosts[1] (etcd2).address").
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.api_route import API_SETTINGS
from orchestrator.core.errors import InventoryError
from orchestrator.core.inventory import DEFAULT_RELEASE_URL
from orchestrator.core.inventory_values import (
    MAX_DAYS,
    BadValue,
    between,
    check_address,
    check_backup_location,
    check_cluster_name,
    check_endpoint_url,
    check_etcd_version,
    check_flags,
    check_host_name,
    check_jump_host,
    check_local_path,
    check_port,
    check_profile,
    check_recipients,
    check_region,
    check_release_pins,
    check_release_url,
    check_sans,
    check_user,
    describe,
    one_of,
    remote_dir,
)
from orchestrator.core.rules import FLAG_NAME


class Ctx:
    """Where we are: the inventory path (as given) and its absolute folder; every error
    names the path as given."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.abspath = Path(os.path.abspath(path))
        self.folder = self.abspath.parent

    def error(self, key: str, message: str) -> InventoryError:
        return InventoryError(self.path, key, message)


REQUIRED: Any = object()
Check = Callable[[Any, Path], Any]


@dataclass(frozen=True)
class Key:
    """One key of a table: its TOML kind, default (REQUIRED or None: absent) and check."""

    kind: str  # "str" | "int" | "bool" | "str_list" | "table"
    default: Any = REQUIRED
    check: Check | None = None


_CLUSTER: dict[str, Key] = {
    "name": Key("str", REQUIRED, check_cluster_name),
    "etcd_version": Key("str", REQUIRED, check_etcd_version),
    "release_url": Key("str", DEFAULT_RELEASE_URL, check_release_url),
    "release_sha256": Key("table", {}, check_release_pins),
    "client_port": Key("int", 2379, check_port),
    "peer_port": Key("int", 2380, check_port),
    "data_dir": Key("str", "/var/lib/etcd", remote_dir("data_dir")),
    "install_dir": Key("str", "/opt/bin", remote_dir("install_dir")),
    "config_dir": Key("str", "/etc/etcd", remote_dir("config_dir")),
    "cert_days": Key("int", 365, between(1, MAX_DAYS)),
    "ca_days": Key("int", 3650, between(1, MAX_DAYS)),
    "extra_sans": Key("str_list", (), check_sans),
    "state_dir": Key("str", None, check_local_path),
    "bootstrap": Key("str", "learner", one_of("learner", "parallel")),
    "renew_within_days": Key("int", 30, between(0, MAX_DAYS)),
    "metrics": Key("str", "local", one_of("local", "host", "off")),
    "metrics_port": Key("int", 2381, check_port),
    "flags": Key("table", {}, check_flags),
}

_SSH: dict[str, Key] = {
    "user": Key("str", "root", check_user),
    "identity_file": Key("str", None, check_local_path),
    "known_hosts": Key("str", "~/.ssh/known_hosts", check_local_path),
    "port": Key("int", 22, check_port),
    "sudo": Key("bool", False),
    "jump_host": Key("str", None, check_jump_host),
    "host_key_check": Key("str", "strict", one_of("strict", "accept-new")),
    "config_file": Key("str", None, check_local_path),
    "etcd_api": Key("str", "auto", one_of(*API_SETTINGS)),
}

_HOST: dict[str, Key] = {
    "name": Key("str", REQUIRED, check_host_name),
    "address": Key("str", REQUIRED, check_address),
    "etcd_address": Key("str", None, check_address),
    "ssh_port": Key("int", None, check_port),
    "ssh_user": Key("str", None, check_user),
    "extra_sans": Key("str_list", (), check_sans),
}

_BACKUP: dict[str, Key] = {
    "to": Key("str", None, check_backup_location),
    "endpoint_url": Key("str", None, check_endpoint_url),
    "region": Key("str", None, check_region),
    "profile": Key("str", None, check_profile),
    "encrypt_to": Key("str_list", (), check_recipients),
    "keep": Key("int", None, between(1, 100_000)),
    "keep_daily": Key("int", None, between(1, 100_000)),
    "keep_weekly": Key("int", None, between(1, 100_000)),
}

TOP_LEVEL = ("cluster", "ssh", "hosts", "backup")

SCHEMA: Mapping[str, Mapping[str, Key]] = {
    "cluster": _CLUSTER,
    "ssh": _SSH,
    "hosts": _HOST,
    "backup": _BACKUP,
}
"""Every documented key per table (for docs and tests); defaults of None mean "unset"."""

_KIND_NAMES = {
    "str": "a string",
    "int": "an integer",
    "bool": "true or false",
    "str_list": "an array of strings",
    "table": "a table",
}


def _check_kind(kind: str, value: Any) -> None:
    """Raise BadValue unless `value` has the TOML kind (bool is no int, "" no string)."""
    expected = _KIND_NAMES[kind]
    if kind == "int":
        ok = type(value) is int
    elif kind == "str":
        ok = isinstance(value, str)
        if ok and not value:
            raise BadValue("must not be empty (remove the key to use the default)")
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "table":
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, list)
        if ok:
            for i, item in enumerate(value):
                if not isinstance(item, str) or not item:
                    what = "an empty string" if item == "" else describe(item)
                    raise BadValue(f"must be a non-empty string, not {what}", f"[{i}]")
    if not ok:
        quoted = isinstance(value, str) and (
            (kind == "int" and value.strip().isdigit())
            or (kind == "bool" and value in ("true", "false"))
        )
        hint = "; remove the quotes" if quoted else ""
        raise BadValue(f"must be {expected}, not {describe(value)}{hint}")


def unknown_key(key: str, known: Iterable[str], where: str) -> str:
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


def read_table(
    raw: Mapping[str, Any], schema: Mapping[str, Key], where: str, ctx: Ctx
) -> dict[str, Any]:
    """Check `raw` against `schema`; returns key -> checked value (defaults filled in)."""
    for key in raw:
        if key not in schema:
            raise ctx.error(_join(where, key), unknown_key(key, schema, where))
    values: dict[str, Any] = {}
    for key, spec in schema.items():
        keypath = _join(where, key)
        try:
            if key in raw:
                value = raw[key]
                _check_kind(spec.kind, value)
            elif spec.default is REQUIRED:
                raise BadValue("required key is missing")
            else:
                value = spec.default
            if value is not None and spec.check is not None:
                value = spec.check(value, ctx.folder)
        except BadValue as bad:
            raise ctx.error(keypath + bad.sub, bad.message) from None
        values[key] = value
    return values


def sub_table(raw: Mapping[str, Any], key: str, ctx: Ctx, required: bool) -> dict[str, Any]:
    """A top-level table, {} when absent and optional."""
    if key not in raw:
        if required:
            raise ctx.error(key, f"missing the [{key}] table")
        return {}
    value = raw[key]
    if not isinstance(value, dict):
        raise ctx.error(key, f"must be a table ([{key}]), not {describe(value)}")
    return value
