"""What the rolling commands (`restart`, `defrag`, `upgrade`) share when they plan (pure):
which inventory hosts are members, and one rolling step per member in the order the rolling
engine is expected to take (`rolling_order.predicted_order`: unhealthy or lagging members
first, the leader last), each saying why it sits where it does."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from orchestrator.core.cluster_view import ClusterView, Member
from orchestrator.core.inventory import Host, Inventory
from orchestrator.core.plan import Noop, Step
from orchestrator.core.rolling_order import LAG_BOUND, lag, predicted_order

NOT_A_MEMBER = "not a member of the cluster"


def members_of(
    inv: Inventory, view: ClusterView, names: Iterable[str]
) -> tuple[list[tuple[Host, Member]], list[Noop]]:
    """The hosts `names` that are members (matched by peer URL, as the rolling engine
    matches them), and a no-op for each one that is not. Unknown names: UsageError."""
    members: list[tuple[Host, Member]] = []
    noops: list[Noop] = []
    seen: set[int] = set()
    for name in dict.fromkeys(names):
        host = inv.host(name)
        member = view.by_peer_url(inv.peer_url(host))
        if member is None:
            noops.append(Noop(host.name, NOT_A_MEMBER))
        elif member.id not in seen:
            seen.add(member.id)
            members.append((host, member))
    return members, noops


def order_note(view: ClusterView, member: Member) -> str:
    """Why the roll takes `member` where it does ("" for a healthy follower)."""
    if not view.is_healthy_member(member.id):
        return f"not healthy ({view.errors.get(member.id, 'not answering')}): first"
    if member.id == view.leader_id:
        if len(view.voters) > 1:
            return "leader: leadership handed over first"
        return "leader, the only voter: no one to hand leadership to"
    behind = lag(view, member.id)
    if behind is None:
        return "lag unknown: first"
    if behind > LAG_BOUND:
        return f"lagging by {behind} entries: first"
    return ""


def rolling_steps(
    view: ClusterView,
    members: list[tuple[Host, Member]],
    *,
    phase: str,
    action: str,
    reason: Callable[[Member], str] = lambda _m: "",
    args: Mapping[str, Any] | None = None,
) -> list[Step]:
    """One health-gated rolling step per member, in the predicted order. `reason`: what
    the command says of a member (its DB, its version), before the order's note."""
    hosts = {m.id: h for h, m in members}
    steps = []
    for member in predicted_order(view, [m for _, m in members]):
        why = "; ".join(part for part in (reason(member), order_note(view, member)) if part)
        steps.append(
            Step(
                phase,
                hosts[member.id].name,
                action,
                why,
                quorum_check=True,
                rolling=True,
                args=dict(args or {}),
            )
        )
    return steps
