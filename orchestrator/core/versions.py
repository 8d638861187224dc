"""etcd version arithmetic and upgrade-path rules (pure, no I/O).

Rules (etcd's upgrade guides): patch upgrades are free; minor versions go one at a time
(3.4 -> 3.5 -> 3.6); some minor jumps need a minimum patch on the source minor first
(`MIN_SOURCE_PATCH`); no downgrades by binary swap; releases with known data-loss bugs
(`KNOWN_BAD`) are refused unless explicitly allowed. What a valid, supported version is
(and the known-bad list) is defined once, in `orchestrator.core.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.core.errors import SafetyRefusal, UsageError
from orchestrator.core.rules import (
    KNOWN_BAD,
    MIN_SUPPORTED,
    Version,
    check_version,
    is_known_bad,
    parse_version,
    version_advisories,
)

__all__ = [
    "KNOWN_BAD",
    "MIN_SOURCE_PATCH",
    "MIN_SUPPORTED",
    "UpgradePath",
    "Version",
    "check_upgrade_path",
    "is_known_bad",
    "parse_version",
    "supported_version",
]

# Before a member leaves minor line (major, minor) for the next minor, it must run at least
# this patch: upstream's upgrade guides, "Update 3.N" in each checklist.
# - 3.5 -> 3.6: https://etcd.io/docs/v3.6/upgrades/upgrade_3_6/ (etcd-io/website
#   content/en/docs/v3.6/upgrades/upgrade_3_6.md). The minimum moved as fixes landed: 3.5.20
#   (the "too many learner members" failure), 3.5.26 (3.5.24-3.5.26 fix upgrade blockers),
#   3.5.32 now.
# - 3.6 -> 3.7: https://etcd.io/docs/v3.7/upgrades/upgrade_3_7/ (content/en/docs/v3.7/
#   upgrades/upgrade_3_7.md): 3.6.11, "earlier 3.6 patch releases may not be compatible
#   with a rolling upgrade to 3.7".
MIN_SOURCE_PATCH: dict[tuple[int, int], int] = {(3, 5): 32, (3, 6): 11}


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
    """A version etcd-deploy can deploy (`rules.version_problem`), or UsageError."""
    try:
        return check_version(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


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
    warnings += [f"etcd {tgt}: {advisory}" for advisory in version_advisories(tgt)]

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
            minimum = f"{cur.major}.{cur.minor}.{need}"
            raise SafetyRefusal(
                f"min-source-patch: etcd {cur} -> {tgt} needs every member on {minimum} or "
                f"later first (upstream's {cur.major}.{tgt.minor} upgrade guide): run "
                f"`etcd-deploy upgrade {minimum}` (or a later {cur.major}.{cur.minor}.x) "
                f"first, then upgrade to {tgt}"
            )
        kind = "minor"

    shown = ", ".join(str(v) for v in currents)
    if kind == "none":
        detail = f"every member already runs etcd {tgt}"
    else:
        detail = f"{kind} upgrade {shown} -> {tgt}, one member at a time"
    return UpgradePath(kind, tgt, detail, tuple(warnings))
