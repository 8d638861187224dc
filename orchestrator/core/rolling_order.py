"""The rolling order (pure): which member goes next in a roll, and when a member counts as
caught up. Unhealthy or lagging members first, then followers, the leader last. The engine
(`orchestrator.engine.rolling`) asks again before every member; planners use
`predicted_order` to show the order a dry run expects."""

from __future__ import annotations

from orchestrator.core.cluster_view import ClusterView, Member

LAG_BOUND = 1000  # raft entries a member may trail the leader by and count as caught up


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


def predicted_order(view: ClusterView, members: list[Member]) -> list[Member]:
    """The order a roll over `members` takes if nothing changes on the way."""
    remaining = list(members)
    order = []
    while remaining:
        pick = next_member(view, remaining)
        order.append(pick)
        remaining.remove(pick)
    return order
