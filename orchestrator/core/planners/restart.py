"""`restart [HOST...]` (pure): restart etcd on the named hosts (default: every inventory
host), one member at a time through the rolling engine, the leader last. A named host that is
not a member is left alone, and said so."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.core.cluster_view import ClusterView
from orchestrator.core.inventory import Inventory
from orchestrator.core.plan import Plan
from orchestrator.core.planners.rolling import members_of, rolling_steps


def plan_restart(inv: Inventory, view: ClusterView, names: Sequence[str] = ()) -> Plan:
    """`names`: the hosts asked for (empty: all). Unknown names: UsageError."""
    members, noops = members_of(inv, view, names or [h.name for h in inv.hosts])
    steps = rolling_steps(view, members, phase="restart", action="restart etcd")
    return Plan("restart", steps=tuple(steps), noops=tuple(noops))
