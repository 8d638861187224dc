"""Every rule about names, flags, host folders and etcd versions, in one place (pure, no I/O).

The inventory loader applies all of them at load time (so no inventory error is found after
SSH or after a CA was made); render.py, versions.py, release.py and the command-line
arguments use the same definitions, never copies of them.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath
from typing import NamedTuple

# --------------------------------------------------------------------------- patterns

FLAG_NAME = re.compile(r"[a-z][a-z0-9-]*")
"""An etcd flag name as written in [cluster.flags] (no leading dashes, lowercase)."""

SAFE_REMOTE_PATH = re.compile(r"/[A-Za-z0-9._+@/-]*")
"""A host path usable unquoted in a unit file, an EnvironmentFile and sh."""

VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z][0-9A-Za-z.-]*))?")
"""MAJOR.MINOR.PATCH with an optional pre-release suffix; no leading "v"."""

# --------------------------------------------------------------------------- flags

_TLS = "it cannot be overridden (TLS is managed by etcd-deploy)"
MANAGED_FLAGS: dict[str, str] = {
    "name": "set hosts[].name instead",
    "data-dir": "set cluster.data_dir instead",
    "listen-peer-urls": "set hosts[].etcd_address and cluster.peer_port instead",
    "listen-client-urls": "set hosts[].etcd_address and cluster.client_port instead",
    "advertise-client-urls": "set hosts[].etcd_address and cluster.client_port instead",
    "initial-advertise-peer-urls": "set hosts[].etcd_address and cluster.peer_port instead",
    "initial-cluster": "set the [[hosts]] list instead",
    "initial-cluster-state": "it cannot be overridden (membership is managed by etcd-deploy)",
    "initial-cluster-token": "set cluster.name instead",
    "client-cert-auth": _TLS,
    "trusted-ca-file": _TLS,
    "cert-file": _TLS,
    "key-file": _TLS,
    "peer-client-cert-auth": _TLS,
    "peer-trusted-ca-file": _TLS,
    "peer-cert-file": _TLS,
    "peer-key-file": _TLS,
}
"""Flags etcd-deploy renders itself -> what controls them instead."""

REFUSED_FLAGS: dict[str, str] = {
    "auto-tls": "it would replace etcd-deploy's CA with self-signed certs",
    "peer-auto-tls": "it would replace etcd-deploy's CA with self-signed certs",
    "strict-reconfig-check": "etcd-deploy relies on it for safe membership changes",
    "config-file": "etcd ignores every environment variable when a config file is set",
    "force-new-cluster": "it would re-run on every restart; use the restore command instead",
    "discovery": "the cluster is bootstrapped from the inventory, not discovery",
    "discovery-srv": "the cluster is bootstrapped from the inventory, not discovery",
    "discovery-endpoints": "the cluster is bootstrapped from the inventory, not discovery",
    "wal-dir": "a separate WAL folder is not supported yet (backups, restore and destroy "
    "would miss it); put cluster.data_dir on the fast disk instead",
}
"""Flags no inventory may set -> why."""


def flag_problem(name: str) -> str | None:
    """Why `name` cannot be set in [cluster.flags], or None when it can."""
    bare = name.lstrip("-")
    if bare != name and FLAG_NAME.fullmatch(bare):
        return f"write flag names without leading dashes: {bare!r}"
    if not FLAG_NAME.fullmatch(name):
        return f"invalid etcd flag name {name!r}: expected [a-z][a-z0-9-]*"
    if name in MANAGED_FLAGS:
        return f"--{name} is managed by etcd-deploy; {MANAGED_FLAGS[name]}"
    if name in REFUSED_FLAGS:
        return f"--{name} is refused by etcd-deploy: {REFUSED_FLAGS[name]}"
    return None


def flag_value_problem(value: str) -> str | None:
    """Why `value` (as a string) cannot be written to etcd.env (a systemd EnvironmentFile)."""
    if not value:
        return "must not be empty (remove the flag to get etcd's default)"
    if any(c in value for c in "\n\r\0"):
        return "flag values must be a single line"
    if "\\" in value or value[:1] in ("'", '"') or value != value.strip():
        return (
            f"{value!r}: systemd would alter this value in an EnvironmentFile "
            "(backslashes, leading quotes or surrounding spaces)"
        )
    return None


# --------------------------------------------------------------------------- host folders

# Folders whose whole tree belongs to the system (or to users): never ours to own or wipe.
_SYSTEM_TREES = frozenset(
    {
        *("/etc", "/home", "/root", "/usr", "/boot", "/proc", "/sys", "/dev", "/run"),
        *("/tmp", "/var/tmp", "/bin", "/sbin", "/var/log", "/var/cache", "/var/spool"),
        *("/var/mail", "/lost+found", "/var/backups"),
    }
)
# Folders that are system folders themselves, whose children may be ours (mount points...).
_SYSTEM_ROOTS = frozenset({"/", "/var", "/var/lib", "/srv", "/mnt", "/media", "/opt", "/opt/bin"})
# install_dir holds three binaries and a wrapper, never wiped: /usr/local/bin is fine.
_INSTALL_TREES = _SYSTEM_TREES - {"/usr", "/bin", "/sbin"}
_INSTALL_ROOTS = (_SYSTEM_ROOTS - {"/opt/bin"}) | {"/usr", "/usr/local", "/usr/lib"}

_SUGGESTION = {"data_dir": "/var/lib/etcd", "config_dir": "/etc/etcd", "install_dir": "/opt/bin"}


def system_folder(path: str, key: str = "data_dir") -> str | None:
    """The system folder that `path` (normalised, absolute) is or lies in, else None.

    `key` is the inventory key: data_dir and config_dir become etcd's (owner etcd, mode
    0700, removed by destroy); install_dir only receives binaries. /etc/etcd* folders are
    the exception inside /etc; children of /var/lib, /srv, /mnt, /media and /opt are fine.
    """
    parts = PurePosixPath(path).parts
    if len(parts) > 2 and parts[1] == "etc" and parts[2].startswith("etcd"):
        return None
    trees, roots = (
        (_INSTALL_TREES, _INSTALL_ROOTS) if key == "install_dir" else (_SYSTEM_TREES, _SYSTEM_ROOTS)
    )
    if path in roots:
        return path
    for depth in range(2, len(parts) + 1):
        prefix = str(PurePosixPath(*parts[:depth]))
        if prefix in trees or (depth == 2 and parts[1].startswith("lib")):
            return prefix
    return None


def system_folder_problem(path: str, key: str) -> str | None:
    """The message for a data_dir/config_dir/install_dir that is a system folder, or None."""
    found = system_folder(path, key)
    if found is None:
        return None
    where = f"{path} is a system folder" if found == path else f"{path} is inside {found}"
    what = (
        "etcd-deploy would install its binaries there"
        if key == "install_dir"
        else "etcd-deploy makes this folder etcd's (owner etcd, mode 0700) and destroy deletes it"
    )
    return f"{where}: {what}; use a folder of its own, e.g. {_SUGGESTION[key]}"


# --------------------------------------------------------------------------- versions


def _suffix_key(suffix: str) -> tuple[int, tuple[tuple[int, int, str], ...]]:
    """Sort key for a pre-release suffix: a release ("") sorts after its pre-releases."""
    if not suffix:
        return (1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in suffix.split("."))
    return (0, parts)


class Version(NamedTuple):
    """A parsed etcd version. Ordered like semver: 3.6.0-rc.1 < 3.6.0 < 3.6.1."""

    major: int
    minor: int
    patch: int
    suffix: str = ""

    def _key(self) -> tuple[int, int, int, tuple[int, tuple[tuple[int, int, str], ...]]]:
        return (self.major, self.minor, self.patch, _suffix_key(self.suffix))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() >= other._key()

    @property
    def minor_line(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}.{self.patch}"
        return f"{base}-{self.suffix}" if self.suffix else base


def parse_version(text: str) -> Version:
    """Parse "3.5.17" or "3.6.0-rc.1" (what etcd reports). ValueError on anything else,
    a leading "v" included (see `version_problem`)."""
    m = VERSION.fullmatch(text.strip())
    if not m:
        raise ValueError(version_problem(text) or f"invalid etcd version {text!r}")
    return Version(int(m[1]), int(m[2]), int(m[3]), m[4] or "")


# Oldest release this tool deploys (learners, /livez and /readyz need 3.4).
MIN_SUPPORTED = Version(3, 4, 0)

# Inclusive ranges of releases never to deploy to production, with the reason shown.
KNOWN_BAD: tuple[tuple[Version, Version, str], ...] = (
    (
        Version(3, 5, 0),
        Version(3, 5, 2),
        "etcd 3.5.0-3.5.2 can lose data consistency after a crash "
        "(etcd-io/etcd#13766); use 3.5.3 or later (3.5.6+ recommended)",
    ),
)


# Inclusive ranges of releases that work but deserve a warning wherever they are deployed
# or kept (the inventory's version, an upgrade's target), with what to do about it.
ADVISORIES: tuple[tuple[Version, Version, str], ...] = (
    (
        Version(3, 4, 0),
        Version(3, 4, 999),
        "etcd 3.4 is past its end of life and gets no more fixes (upstream supports the "
        "current minor and the one before it: https://etcd.io/docs/v3.6/op-guide/versioning/); "
        "upgrade to 3.5 (`etcd-deploy upgrade 3.5.N`)",
    ),
    (
        Version(3, 5, 1),
        Version(3, 5, 19),
        "etcd 3.5.1-3.5.19 record a learner's promotion in the v2 store only "
        "(etcd-io/etcd#19557): a later upgrade to 3.6 can find the promoted members still "
        'learners and fail with "too many learner members"; fixed in 3.5.20, so use 3.5.20 '
        "or later (`etcd-deploy upgrade 3.5.N`)",
    ),
)


def _in_ranges(v: Version | str, ranges: tuple[tuple[Version, Version, str], ...]) -> list[str]:
    ver = v if isinstance(v, Version) else parse_version(v)
    return [text for low, high, text in ranges if low <= ver <= high]


def is_known_bad(v: Version | str) -> str | None:
    """The reason `v` must not be deployed, or None."""
    found = _in_ranges(v, KNOWN_BAD)
    return found[0] if found else None


def version_advisories(v: Version | str) -> tuple[str, ...]:
    """What to warn about a release that may be deployed (`ADVISORIES`), oldest rule first."""
    return tuple(_in_ranges(v, ADVISORIES))


def version_problem(text: str) -> str | None:
    """Why `text` is not a version etcd-deploy deploys (inventory, upgrade, release), or None.

    One answer everywhere: no leading "v", MAJOR.MINOR.PATCH, releases only (pre-releases
    such as 3.6.0-rc.1 are refused), MIN_SUPPORTED or later. Known-bad releases are not a
    problem here: they warn (inventory) or need --allow-known-bad (upgrade).
    """
    if text[:1] in ("v", "V") and VERSION.fullmatch(text[1:]):
        return f"write the version without the leading v: {text[1:]}"
    m = VERSION.fullmatch(text)
    if m is None:
        return f'invalid etcd version {text!r}: expected X.Y.Z (e.g. "3.5.17")'
    if m[4]:
        return (
            f"etcd {text} is a pre-release: etcd-deploy deploys releases only "
            f"(X.Y.Z, e.g. {m[1]}.{m[2]}.{m[3]} once it is out)"
        )
    if Version(int(m[1]), int(m[2]), int(m[3])) < MIN_SUPPORTED:
        return f"etcd {text} is not supported: etcd-deploy needs {MIN_SUPPORTED} or later"
    return None


def check_version(text: str) -> Version:
    """The parsed version, or ValueError with `version_problem`'s message."""
    problem = version_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return parse_version(text)


# --------------------------------------------------------------------------- releases

RELEASE_ARCHES = ("amd64", "arm64", "ppc64le", "s390x")
"""Architectures etcd publishes Linux release tarballs for."""

SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


def redact_url(url: str) -> str:
    """`url` with a password in it replaced by *** (a user name alone, often a token, too)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        return url
    user, colon, _password = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}://{shown}@{hostport}{slash}{path}"


def _url_host(url: str) -> str:
    authority = url.partition("://")[2].partition("/")[0].rpartition("@")[2]
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    return authority.rpartition(":")[0] if authority.count(":") == 1 else authority


def is_loopback_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def needs_release_pin(url: str) -> bool:
    """True for a plain http:// release source on another machine: its SHA256SUMS could be
    tampered with on the way like the tarball, so only a pinned sha256 can verify it."""
    if not url.lower().startswith("http://"):
        return False
    return not is_loopback_host(_url_host(url))


def release_pin_key(version: Version | str, arch: str) -> str:
    """The key of one tarball in cluster.release_sha256: "3.5.30/amd64"."""
    return f"{version}/{arch}"


def release_pin_problem(key: str, value: object) -> str | None:
    """Why `key = value` is not a valid cluster.release_sha256 entry, or None."""
    version, slash, arch = key.partition("/")
    if not slash:
        return f'invalid key {key!r}: expected "VERSION/ARCH", e.g. "3.5.17/amd64"'
    problem = version_problem(version)
    if problem is not None:
        return f"invalid key {key!r}: {problem}"
    if arch not in RELEASE_ARCHES:
        return f"invalid key {key!r}: unknown architecture {arch!r} ({', '.join(RELEASE_ARCHES)})"
    if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
        return f"must be the tarball's sha256 (64 hex digits), not {value!r}"
    return None
