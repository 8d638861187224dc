"""Builders for planner table tests: cluster views as members would answer, with no network.

`view(inv, leader="etcd2", down={"etcd3"}, learners={"etcd4"}, lag={"etcd1": 5000})` gives
every inventory host (or those named in `members`) a started member with id 0x100+i, peer
URL from the inventory, and a status unless the host is `down`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from orchestrator.core.cluster_view import ClusterView, Member, MemberStatus
from orchestrator.core.inventory import Inventory


def member_id(inv: Inventory, name: str) -> int:
    return 0x100 + [h.name for h in inv.hosts].index(name)


def view(
    inv: Inventory,
    *,
    members: Collection[str] | None = None,
    leader: str | None = None,
    down: Collection[str] = (),
    learners: Collection[str] = (),
    lag: Mapping[str, int] | None = None,
    alarms: Collection[tuple[str, str]] = (),
    extra: Collection[Member] = (),
    db_size: int = 100 << 20,
    db_in_use: int = 40 << 20,
    version: str = "3.5.30",
) -> ClusterView:
    names = list(members) if members is not None else [h.name for h in inv.hosts]
    leader = leader or next(n for n in names if n not in down and n not in learners)
    found = [
        Member(
            member_id(inv, n),
            n,
            (inv.peer_url(inv.host(n)),),
            (inv.client_url(inv.host(n)),),
            n in learners,
        )
        for n in names
    ]
    statuses = {}
    for m in found:
        if m.name in down:
            continue
        behind = (lag or {}).get(m.name, 0)
        statuses[m.id] = MemberStatus(
            endpoint=m.client_urls[0],
            member_id=m.id,
            leader_id=member_id(inv, leader),
            version=version,
            db_size=db_size,
            db_size_in_use=db_in_use,
            raft_term=2,
            raft_index=10_000,
            raft_applied_index=10_000 - behind,
            revision=500,
            is_learner=m.is_learner,
            errors=(),
            cluster_id=0xC1,
        )
    errors = {member_id(inv, n): "connection refused" for n in down}
    return ClusterView(
        [*found, *extra],
        statuses,
        errors,
        [(member_id(inv, n), kind) for n, kind in alarms],
    )
