"""The one rolling engine: config changes, restarts, upgrades, defrag and CA roll-outs all go
through it, so all of them are safe the same way.

Order: unhealthy or lagging members first, then followers, the leader last (after handing
leadership to a healthy, caught-up follower). The order is chosen afresh before every
member, so a leadership change mid-way still leaves the current leader for last. Before each
member the rest of the cluster is healthy; after it the whole cluster is healthy and the
member is caught up with the leader. At the first failure the engine stops, leaves the rest
untouched and says where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from orchestrator.adapters.etcd_api import EtcdApiError, Member
from orchestrator.core.errors import ClusterUnhealthy, EtcdDeployError, PhaseFailure, detail_of
from orchestrator.core.inventory import Host
from orchestrator.engine.cluster import ClusterView, observe, wait_healthy
from orchestrator.engine.context import RunContext
from orchestrator.engine.membership import hand_over_leadership
from orchestrator.engine.polling import Backoff

LAG_BOUND = 1000  # raft entries a member may trail the leader by and count as caught up
SETTLE_TIMEOUT = 120.0


def lag(view: ClusterView, member_id: int) -> int | None:
    """How many raft entries `member_id` has yet to apply, or None when unknown."""
    leader = view.statuses.get(view.leader_id or 0)
    status = view.statuses.get(member_id)
    if leader is None or status is None:
        return None
    return max(0, leader.raft_index - status.raft_applied_index)


def next_member(view: ClusterView, remaining: list[Member], lag_bound: int = LAG_BOUND) -> Member:
    """Pure: the member to handle next among `remaining`."""

    def rank(m: Member) -> tuple[int, str]:
        if m.id == view.leader_id and view.is_healthy_member(m.id):
            return (2, m.name)
        behind = lag(view, m.id)
        if not view.is_healthy_member(m.id) or behind is None or behind > lag_bound:
            return (0, m.name)
        return (1, m.name)

    return min(remaining, key=rank)


def is_caught_up(view: ClusterView, member_id: int, lag_bound: int = LAG_BOUND) -> bool:
    behind = lag(view, member_id)
    return view.healthy and behind is not None and behind <= lag_bound


@dataclass
class RollResult:
    done: list[str]
    skipped: list[str]  # hosts that are not members


def roll(
    ctx: RunContext,
    hosts: list[Host],
    action: Callable[[Host, Member], None],
    *,
    phase: str,
    describe: str,
    dry_run: bool = False,
    tolerate: Collection[str] = (),
) -> RollResult:
    """Apply `action` to each member of `hosts`, one at a time, in the engine's order.
    `tolerate`: alarm kinds the health gates overlook (those the action is there to clear)."""
    client = ctx.client()
    view = observe(client, tolerate=tolerate)
    members: dict[int, tuple[Host, Member]] = {}
    skipped = []
    for host in hosts:
        member = view.by_peer_url(ctx.inv.peer_url(host))
        if member is None:
            skipped.append(host.name)
            ctx.ui.warn(f"{phase} {host.name}", "not a member of the cluster; skipped")
        else:
            members[member.id] = (host, member)
    if dry_run:
        remaining = [m for _, m in members.values()]
        order = []
        while remaining:
            pick = next_member(view, remaining)
            order.append(pick)
            remaining.remove(pick)
        for m in order:
            leader = " (leader: leadership handed over first)" if m.id == view.leader_id else ""
            ctx.ui.print(f"[{phase} {m.name}] would {describe}{leader}")
        return RollResult([], skipped)
    done: list[str] = []
    remaining = [m for _, m in members.values()]
    while remaining:
        try:
            view = observe(client, tolerate=tolerate)
        except EtcdDeployError as exc:
            names = [members[m.id][0].name for m in remaining]
            raise _stopped(phase, None, exc, done, names) from None
        member = next_member(view, remaining)
        host = members[member.id][0]
        step = f"{phase} {host.name}"
        try:
            ignore = () if view.is_healthy_member(member.id) else {member.id}
            view = wait_healthy(client, timeout=60, ignore=ignore, tolerate=tolerate)
            if (
                member.id == view.leader_id
                and len(view.voters) > 1
                and hand_over_leadership(client, view, member, ctx.ui.log) is not None
            ):
                view = wait_healthy(client, timeout=30, ignore=ignore, tolerate=tolerate)
            ctx.ui.info(step, describe)
            action(host, member)
            wait_caught_up(ctx, member.id, tolerate=tolerate)
        except EtcdDeployError as exc:
            untouched = [members[m.id][0].name for m in remaining if m.id != member.id]
            raise _stopped(phase, host.name, exc, done, untouched) from None
        ctx.ui.info(step, "healthy and caught up")
        done.append(host.name)
        remaining.remove(member)
    return RollResult(done, skipped)


def _stopped(
    phase: str, at: str | None, exc: EtcdDeployError, done: list[str], untouched: list[str]
) -> PhaseFailure:
    """The failure that ends a roll: what failed, where it stopped, what is done and not."""
    where = f"stopped at {at}" if at else "stopped before the next member (no member answered)"
    return PhaseFailure(
        phase,
        at,
        f"{detail_of(exc)}\n{where}; done: {', '.join(done) or 'none'}; "
        f"untouched: {', '.join(untouched) or 'none'}",
        exit_code=exc.exit_code,
    )


def wait_caught_up(
    ctx: RunContext,
    member_id: int,
    timeout: float = SETTLE_TIMEOUT,
    tolerate: Collection[str] = (),
) -> None:
    """Until the whole cluster is healthy and `member_id` trails the leader by little."""
    backoff = Backoff(timeout)
    last = ""
    while True:
        try:
            view = observe(ctx.client(), tolerate=tolerate)
            if is_caught_up(view, member_id):
                return
            last = "; ".join(view.problems()) or f"lagging by {lag(view, member_id)} entries"
        except EtcdApiError as exc:
            last = str(exc)
        if not backoff.pause():
            raise ClusterUnhealthy(f"not healthy and caught up after {timeout:.0f} s: {last}")
