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

from orchestrator.adapters.etcd_api import EtcdApiError
from orchestrator.core.cluster_view import Member
from orchestrator.core.errors import ClusterUnhealthy, EtcdDeployError, PhaseFailure, detail_of
from orchestrator.core.inventory import Host
from orchestrator.core.rolling_order import is_caught_up, lag, next_member
from orchestrator.engine.cluster import observe, wait_healthy
from orchestrator.engine.context import RunContext
from orchestrator.engine.membership import hand_over_leadership
from orchestrator.engine.polling import Backoff

SETTLE_TIMEOUT = 120.0


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
    describe: str | Callable[[str], str],
    tolerate: Collection[str] = (),
    done: list[str] | None = None,
) -> RollResult:
    """Apply `action` to each member of `hosts`, one at a time, in the engine's order.
    `describe`: what is done to a member, said before it (or, given a host name, says it).
    `tolerate`: alarm kinds the health gates overlook (those the action is there to clear).
    `done`: filled with each host as it is done (read it after a failure too)."""
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
    done = [] if done is None else done
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
            ctx.ui.info(step, describe if isinstance(describe, str) else describe(host.name))
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
