"""Builders for the planner tests of destructive commands (destroy, restore): a host's facts
as the identity read sees them (its data dir, its etcd.env, whether etcd runs) and whose CA
it trusts, with no network.

`host(inv, "etcd1")` is a member of this cluster (data dir marked ours, an etcd.env of ours,
etcd running); `host(inv, "etcd2", data="none", env=False, running=False)` a fresh host.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.core.facts import HostFacts
from orchestrator.core.identity import IdentityObserved, identity_paths
from orchestrator.core.inventory import Inventory
from orchestrator.core.ownership import DirFacts, Marker
from tests.unit.helpers import MARKER, TOKEN

# data= what the data dir is: "ours" (marked, etcd data), "none" (absent), "unmarked" (a
# folder of somebody's files, no marker), "foreign" (another cluster's marker), "link"
# (a symlink), "mount" (a mount point marked ours), "empty" (exists, nothing in it).
DATA = {
    "ours": DirFacts(True, MARKER.render(), ("member",)),
    "none": DirFacts(),
    "unmarked": DirFacts(True, None, ("reports", "notes")),
    "foreign": DirFacts(True, Marker("lab", "feedc0de").render(), ("member",)),
    "link": DirFacts(True, None, (), link="/srv/elsewhere"),
    "mount": DirFacts(True, MARKER.render(), ("member",), mount_point=True),
    "empty": DirFacts(True, None, ()),
}


def our_env(inv: Inventory, name: str, *, token: str = TOKEN, member: str | None = None) -> str:
    peer = inv.peer_url(inv.host(name))
    return (
        f"ETCD_NAME={member or name}\nETCD_INITIAL_CLUSTER_TOKEN={token}\n"
        f"ETCD_INITIAL_ADVERTISE_PEER_URLS={peer}\n"
    )


def host(
    inv: Inventory,
    name: str,
    *,
    data: str = "ours",
    env: str | bool = True,
    running: bool = True,
    arch: str = "x86_64",
) -> HostFacts:
    """`env`: True for an etcd.env of ours, False for none, or its text."""
    c = inv.cluster
    folder = DATA[data]
    facts = HostFacts(
        arch=arch,
        active_state="active" if running else "",
        has_data="member" in folder.entries and not folder.link,
        folders={c.data_dir: folder, c.config_dir: DirFacts()},
        lock="acquired",
        lock_acquired=True,
    )
    if env is not False:
        text = our_env(inv, name) if env is True else str(env)
        facts.texts[identity_paths(inv)[1]] = text
    return facts


def observed(
    inv: Inventory,
    facts: Mapping[str, HostFacts] | None = None,
    *,
    trust: Mapping[str, str] | None = None,
    marker: Marker = MARKER,
    **per_host: HostFacts,
) -> IdentityObserved:
    """Every inventory host as a member of this cluster, but those given (`facts`, or by
    name); every host trusts our CA unless `trust` says otherwise."""
    chosen = dict(facts or {}) | per_host
    all_facts = {h.name: chosen.get(h.name) or host(inv, h.name) for h in inv.hosts}
    trusted = {n: "ours" for n in all_facts} | dict(trust or {})
    return IdentityObserved(all_facts, trusted, marker)
