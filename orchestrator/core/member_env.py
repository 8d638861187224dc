"""etcd.env for a member (pure): whom it starts with. A founder of a new cluster starts
with itself (learner mode) or every host (a parallel or static bootstrap, a restore); a
joiner starts with the current members plus itself."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.core.cluster_view import Member
from orchestrator.core.inventory import Host, Inventory
from orchestrator.core.render import render_etcd_env
from orchestrator.core.versions import Version


def initial_cluster(
    inv: Inventory,
    host: Host,
    *,
    state: str,
    members: Sequence[Member] = (),
    static: bool = False,
) -> list[tuple[str, str]]:
    """(name, peer URL) of the members `host` starts with."""
    if state == "new":
        founders = inv.hosts if static or inv.cluster.bootstrap == "parallel" else (host,)
        return [(h.name, inv.peer_url(h)) for h in founders]
    own = inv.peer_url(host)
    # A member added but not started yet has no name: name it from the inventory.
    by_url = {inv.peer_url(h): h.name for h in inv.hosts}
    initial = [
        (m.name or by_url.get(m.peer_urls[0]) or f"member-{m.id:x}", m.peer_urls[0])
        for m in members
    ]
    if not any(url == own for _, url in initial):
        initial.append((host.name, own))
    return initial


def member_env(
    inv: Inventory,
    host: Host,
    *,
    token: str,
    state: str,
    members: Sequence[Member] = (),
    version: Version | None = None,
    static: bool = False,
) -> str:
    """etcd.env for `host` (see `initial_cluster`). `version`: the etcd version the flags
    are rendered for (default: the inventory's)."""
    return render_etcd_env(
        inv,
        host,
        initial_cluster=initial_cluster(inv, host, state=state, members=members, static=static),
        initial_state=state,
        token=token,
        version=version or inv.cluster.etcd_version,
    )
