"""`upgrade VERSION` (pure): whether the cluster may move to VERSION (the version-path rules
of `core.versions`), and the steps: from 3.5 to 3.6, each member's v2 store checked first
(`core.v2store`); fetch and verify the release, take a backup first, then
per member through the rolling engine (leader last): push the release, swap the binaries
(the old ones kept), render the flags the new version understands, restart, wait healthy and
caught up (a member that does not come back gets its old binaries and env again); at the end
the inventory's etcd_version. When every member runs VERSION already, only the inventory may
need the new version.
"""

from __future__ import annotations

from orchestrator.core import v2store
from orchestrator.core.cluster_view import ClusterView
from orchestrator.core.errors import ClusterUnhealthy, SafetyRefusal, UsageError
from orchestrator.core.inventory import Inventory
from orchestrator.core.plan import Noop, Plan, Refusal, Step
from orchestrator.core.planners.rolling import members_of, rolling_steps
from orchestrator.core.render import resolve_flags
from orchestrator.core.rules import needs_release_pin
from orchestrator.core.versions import UpgradePath, check_upgrade_path, parse_version


def _refused(exc: SafetyRefusal) -> Plan:
    text = str(exc)
    override = "--allow-known-bad" if text.startswith("known-bad-version:") else ""
    return Plan("upgrade", refusals=(Refusal(None, text, override=override),))


def plan_target(inv: Inventory, target: str, *, allow_known_bad: bool) -> Plan:
    """The checks of the target alone, made before any call: a refusal for a known-bad
    release (unless allowed); UsageError for a version this tool does not deploy, or for a
    plain-http release source with no sha256 pinned for the target."""
    try:
        check_upgrade_path([], target, allow_known_bad)
    except SafetyRefusal as exc:
        return _refused(exc)
    try:  # every member's env for the target renders these: refused before any host changes
        resolve_flags(inv.cluster.flags, parse_version(target))
    except UsageError as exc:
        raise UsageError(f"{inv.path}: {exc}; nothing was changed") from None
    if needs_release_pin(inv.cluster.release_url) and not any(
        key.partition("/")[0] == target for key in inv.cluster.release_sha256
    ):
        raise UsageError(
            f"{inv.path}: cluster.release_url is plain http:// on another machine: pin the "
            f'sha256 of etcd {target}\'s tarballs in cluster.release_sha256 ("{target}/amd64" '
            '= "<sha256>") before upgrading'
        )
    return Plan("upgrade")


def plan_upgrade(
    inv: Inventory, view: ClusterView, target: str, *, allow_known_bad: bool = False
) -> Plan:
    """`view`: the cluster as its members answer now. Refused: a target `plan_target`
    refuses, an unhealthy cluster (exit 6), a move the version path forbids (a downgrade,
    a skipped minor, a minor jump from too old a patch, a major change)."""
    early = plan_target(inv, target, allow_known_bad=allow_known_bad)
    if early.refusals:
        return early
    if not view.healthy:
        why = "upgrade needs a healthy cluster first: " + "; ".join(view.problems())
        refusal = Refusal(None, why, exit_code=ClusterUnhealthy.exit_code)
        return Plan("upgrade", refusals=(refusal,))
    current = [s.version for s in view.statuses.values()]
    try:
        path = check_upgrade_path(current, target, allow_known_bad)
    except SafetyRefusal as exc:
        return _refused(exc)
    inventory = Step(
        "inventory",
        None,
        f'set etcd_version = "{target}" in {inv.path}',
        f"every member runs etcd {target} already"
        if path.kind == "none"
        else f"once every member runs etcd {target}",
        kind="inventory",
        args={"version": target},
    )
    if path.kind == "none":
        at_target = str(inv.cluster.etcd_version) == target
        return Plan(
            "upgrade",
            steps=() if at_target else (inventory,),
            noops=(Noop(None, f"every member already runs etcd {target}"),),
            warnings=path.warnings,
        )
    return _rolling_plan(inv, view, target, path, current, inventory)


def _rolling_plan(
    inv: Inventory,
    view: ClusterView,
    target: str,
    path: UpgradePath,
    current: list[str],
    inventory: Step,
) -> Plan:
    members, noops = members_of(inv, view, [h.name for h in inv.hosts])
    summary = f"{', '.join(sorted(set(current)))} -> {target}: {path.detail}"
    release = Step(
        "release",
        None,
        f"fetch etcd {target} for each host's architecture, verified",
        "before any member changes",
        kind="release",
        changes=False,
        args={"version": target, "summary": summary},
    )
    backup = Step(
        "backup",
        None,
        "snapshot of the leader into the state dir",
        f"first: the way back from the {path.detail}",
        kind="backup",
    )

    def runs(member_id: int) -> str:
        status = view.statuses.get(member_id)
        return f"runs etcd {status.version}" if status else ""

    steps = rolling_steps(
        view,
        members,
        phase="upgrade",
        action=f"install etcd {target} and restart",
        reason=lambda m: runs(m.id),
        args={"version": target},
    )
    checks = (
        tuple(
            Step(
                "v2store",
                name,
                "check the v2 store holds membership only (etcdutl check v2store)",
                "3.6 has no v2 store: upstream's 3.6 upgrade guide asks for this check first",
                changes=False,
                parallel=True,
                args={"version": target},
            )
            for name in sorted(host.name for host, _ in members)
        )
        if v2store.needs_check(current, target)
        else ()
    )
    return Plan(
        "upgrade",
        steps=(*checks, release, backup, *steps, inventory),
        noops=tuple(noops),
        warnings=path.warnings,
    )


def summary(plan: Plan) -> str | None:
    """The line a run says first: the versions now -> the target, and the path's kind."""
    return next((s.args["summary"] for s in plan.steps if "summary" in s.args), None)
