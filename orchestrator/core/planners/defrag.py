"""`defrag [--threshold PCT]` (pure): defragment every member with at least PCT percent free
space inside its DB, one at a time through the rolling engine, the leader last; members
below the threshold are left alone, and said so; then a NOSPACE alarm is disarmed (the
defrag is how the space comes back, so the roll's health gates overlook that alarm)."""

from __future__ import annotations

from orchestrator.core.cluster_view import ClusterView, MemberStatus, member_label
from orchestrator.core.inventory import Inventory
from orchestrator.core.plan import Noop, Plan, Step
from orchestrator.core.planners.rolling import members_of, rolling_steps
from orchestrator.core.units import human_size

TOLERATE = ("NOSPACE",)  # the alarm defrag is there to clear


def free_percent(status: MemberStatus) -> float:
    """How much of the member's DB file is free pages (what a defrag gives back)."""
    return 100.0 * (status.db_size - status.db_size_in_use) / max(status.db_size, 1)


def below_threshold(status: MemberStatus, threshold: float) -> str | None:
    """Why a member with this status is not defragmented, or None when it is."""
    free = free_percent(status)
    if free >= threshold:
        return None
    return (
        f"{free:.0f}% free inside the DB ({human_size(status.db_size)}), "
        f"below the {threshold:g}% threshold"
    )


def plan_defrag(inv: Inventory, view: ClusterView, threshold: float) -> Plan:
    """`view`: observed with NOSPACE tolerated (`TOLERATE`), as the roll observes it."""
    members, noops = members_of(inv, view, [h.name for h in inv.hosts])
    chosen = []
    for host, member in members:
        status = view.statuses.get(member.id)
        # Decided from the sizes observed now; the handler checks the same rule again at
        # the member's turn, since writes and compactions change them in between.
        why = below_threshold(status, threshold) if status is not None else None
        if why is not None:
            noops.append(Noop(host.name, why))
        else:
            chosen.append((host, member))

    def size_note(member_id: int) -> str:
        status = view.statuses.get(member_id)
        if status is None:
            return "its DB size is unknown (not answering): checked at its turn"
        return f"{free_percent(status):.0f}% of its {human_size(status.db_size)} DB free"

    steps = rolling_steps(
        view,
        chosen,
        phase="defrag",
        action=f"defragment if at least {threshold:g}% of its DB is free",
        reason=lambda m: size_note(m.id),
        args={"tolerate": TOLERATE, "threshold": threshold},
    )
    order = [h.name for h in inv.hosts]
    noops.sort(key=lambda n: order.index(n.host) if n.host in order else len(order))
    return Plan("defrag", steps=(*steps, _disarm_step(view)), noops=tuple(noops))


def _disarm_step(view: ClusterView) -> Step:
    """After the roll: disarm every NOSPACE alarm then raised (a check only, when none is
    raised now)."""
    raised = sorted({member_label(view, i) for i, kind in view.alarms if kind == "NOSPACE"})
    if raised:
        return Step(
            "defrag",
            None,
            f"disarm the NOSPACE alarm of {', '.join(raised)}",
            "once the members are defragmented",
            kind="disarm",
        )
    return Step(
        "defrag",
        None,
        "disarm a NOSPACE alarm if one is raised by then",
        "none is raised now",
        kind="disarm",
        changes=False,
    )
