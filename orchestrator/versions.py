"""etcd version arithmetic and upgrade-path rules (pure, no I/O).

Rules (etcd's upgrade guides): patch upgrades are free; minor versions go one at a time
(3.4 -> 3.5 -> 3.6); some minor jumps need a minimum patch on the source minor first
(`MIN_SOURCE_PATCH`); no downgrades by binary swap; releases with known data-loss bugs
(`KNOWN_BAD`) are refused unless explicitly allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from orchestrator.errors import SafetyRefusal, UsageError

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?$")


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
    """Parse "3.5.17", "v3.5.17" or "3.6.0-rc.1". Raises ValueError on anything else."""
    m = _VERSION_RE.match(text.strip())
    if not m:
        raise ValueError(f"invalid etcd version {text!r}: expected MAJOR.MINOR.PATCH")
    return Version(int(m[1]), int(m[2]), int(m[3]), m[4] or "")


def _as_version(v: Version | str) -> Version:
    return v if isinstance(v, Version) else parse_version(v)


# Inclusive ranges of releases never to deploy to production, with the reason shown.
KNOWN_BAD: tuple[tuple[Version, Version, str], ...] = (
    (
        Version(3, 5, 0),
        Version(3, 5, 2),
        "etcd 3.5.0-3.5.2 can lose data consistency after a crash "
        "(etcd-io/etcd#13766); use 3.5.3 or later (3.5.6+ recommended)",
    ),
)

# Before a member leaves minor line (major, minor) for the next minor, it must run at least
# this patch. 3.5 -> 3.6: etcd's 3.6 upgrade guide requires 3.5.26+ (latest guidance 3.5.32,
# fixing the "too many learner members" upgrade failure and v2store/membership checks).
MIN_SOURCE_PATCH: dict[tuple[int, int], int] = {(3, 5): 26}

# Oldest minor line this tool deploys (learners, /livez and /readyz need 3.4).
MIN_SUPPORTED = Version(3, 4, 0)


def is_known_bad(v: Version | str) -> str | None:
    """The reason `v` must not be deployed, or None."""
    ver = _as_version(v)
    for low, high, reason in KNOWN_BAD:
        if low <= ver <= high:
            return reason
    return None


@dataclass(frozen=True)
class UpgradePath:
    """An allowed move to `target`.

    kind: "install" (nothing running yet), "none" (every member already runs target),
    "patch" (same minor line everywhere) or "minor" (at least one member changes minor).
    warnings: things to print loudly but not refuse (known-bad allowed explicitly).
    """

    kind: str
    target: Version
    detail: str
    warnings: tuple[str, ...] = ()


def supported_version(text: str) -> Version:
    """Parse a version etcd-deploy can deploy; UsageError for a malformed or too old one."""
    try:
        v = parse_version(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if v < MIN_SUPPORTED:
        raise UsageError(f"etcd {v} is not supported: etcd-deploy needs {MIN_SUPPORTED} or later")
    return v


def check_upgrade_path(
    current_versions: list[str], target: str, allow_known_bad: bool = False
) -> UpgradePath:
    """Decide whether the members running `current_versions` may move to `target`.

    `current_versions` holds one entry per member already running etcd (empty for a fresh
    install; duplicates are fine). Returns an `UpgradePath`, or raises `SafetyRefusal`
    (message starts with the rule name) when the move could lose data or break the cluster,
    and `UsageError` for a target this tool does not support.
    """
    tgt = supported_version(target)
    warnings: list[str] = []
    bad = is_known_bad(tgt)
    if bad:
        if not allow_known_bad:
            raise SafetyRefusal(
                f"known-bad-version: refusing etcd {tgt}: {bad} "
                "(override with the allow-known-bad option only for tests)"
            )
        warnings.append(f"deploying known-bad etcd {tgt} because it was explicitly allowed: {bad}")

    currents = sorted({parse_version(v) for v in current_versions})
    if not currents:
        return UpgradePath("install", tgt, f"fresh install of etcd {tgt}", tuple(warnings))

    kind = "none"
    for cur in currents:
        if cur == tgt:
            continue
        if tgt < cur:
            raise SafetyRefusal(
                f"no-downgrade: a member runs etcd {cur}, target is {tgt}: downgrades by "
                "binary swap are not supported; keep the inventory at "
                f"{max(currents)} or restore a snapshot taken before the upgrade"
            )
        if tgt.major != cur.major:
            raise SafetyRefusal(
                f"no-major-upgrade: etcd {cur} -> {tgt} changes the major version; "
                "not supported by etcd-deploy"
            )
        if tgt.minor == cur.minor:
            kind = "minor" if kind == "minor" else "patch"
            continue
        if tgt.minor > cur.minor + 1:
            step = f"{cur.major}.{cur.minor + 1}"
            raise SafetyRefusal(
                f"minor-one-at-a-time: etcd {cur} -> {tgt} skips a minor version; "
                f"upgrade every member to the latest {step}.x first, then to {tgt}"
            )
        need = MIN_SOURCE_PATCH.get(cur.minor_line)
        if need is not None and cur.patch < need:
            raise SafetyRefusal(
                f"min-source-patch: etcd {cur} -> {tgt} needs every member on "
                f"{cur.major}.{cur.minor}.{need} or later first; upgrade to the latest "
                f"{cur.major}.{cur.minor}.x (patch upgrade), then to {tgt}"
            )
        kind = "minor"

    shown = ", ".join(str(v) for v in currents)
    if kind == "none":
        detail = f"every member already runs etcd {tgt}"
    else:
        detail = f"{kind} upgrade {shown} -> {tgt}, one member at a time"
    return UpgradePath(kind, tgt, detail, tuple(warnings))
