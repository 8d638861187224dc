"""Whose etcd does each host hold? The pure judgement behind every destructive command
(destroy, restore, remove-node, replace-node): from each host's facts (its CA file and
etcd.env read with them, its data and config dirs), whose CA it trusts and our marker,
which hosts may hold another cluster or a member this inventory does not describe, and the
refusal (or, with --force where a command allows it, the warning) that follows. The engine
reads (`orchestrator.engine.identity`); the rules per host are in `ownership.py`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from orchestrator.core.facts import HostFacts
from orchestrator.core.host_paths import env_path
from orchestrator.core.inventory import Inventory
from orchestrator.core.ownership import (
    CONFIG_RULE,
    DATA_RULE,
    ETCD_DATA,
    OUR_ENV,
    DirFacts,
    HostIdentity,
    Marker,
    identity_problems,
    judge,
)
from orchestrator.core.plan import Refusal
from orchestrator.core.render import env_values, pki_paths


@dataclass(frozen=True)
class IdentityObserved:
    """What was read to judge the hosts: each host's facts (with its CA file's and
    etcd.env's text), whose CA each host trusts (`ownership.ca_trust`: "ours", "foreign",
    "none", "unknown") and this cluster's marker (its id "" when the state dir has none)."""

    facts: Mapping[str, HostFacts]
    trust: Mapping[str, str]
    marker: Marker


def identity_paths(inv: Inventory) -> tuple[str, str]:
    """The host files the judgement reads: the CA file and etcd.env."""
    return pki_paths(inv)["ca.crt"], env_path(inv)


def host_identity(inv: Inventory, obs: IdentityObserved, name: str) -> HostIdentity:
    """What host `name`'s facts say about whose etcd it holds."""
    c = inv.cluster
    facts = obs.facts[name]
    empty = DirFacts()
    return HostIdentity(
        holds_cluster=facts.holds_cluster,
        env=env_values(facts.texts.get(identity_paths(inv)[1], "")),
        ca=obs.trust.get(name, "none"),
        data=judge(
            c.data_dir,
            facts.folders.get(c.data_dir, empty),
            DATA_RULE,
            obs.marker,
            proven=ETCD_DATA,
        ),
        config=judge(
            c.config_dir,
            facts.folders.get(c.config_dir, empty),
            CONFIG_RULE,
            obs.marker,
            proven=OUR_ENV,
        ),
        links=tuple(sorted(facts.links)),
    )


def foreign_hosts(
    inv: Inventory, obs: IdentityObserved, judged: Collection[str] | None = None
) -> dict[str, list[str]]:
    """Host -> why it may not be ours, for every read host (or those in `judged`) that may
    hold another cluster or a member this inventory does not describe (in read order)."""
    found = {}
    for name in obs.facts:
        if judged is not None and name not in judged:
            continue
        who = host_identity(inv, obs, name)
        problems = identity_problems(inv.cluster.name, name, inv.peer_url(inv.host(name)), who)
        if problems:
            found[name] = problems
    return found


def identity_refusals(
    inv: Inventory,
    obs: IdentityObserved,
    *,
    command: str,
    force: bool,
    forced: str,
    override: str = "",
    judged: Collection[str] | None = None,
) -> tuple[tuple[Refusal, ...], tuple[str, ...]]:
    """(refusals, warnings): one refusal naming every host in `judged` (default: every host
    read) that may not be ours and what was found there, or, with `force`, a warning
    instead. `command` starts the refusal's text; `forced` ends it: what to do about it
    (what --force does, for a command that allows it: `override` names that flag)."""
    found = foreign_hosts(inv, obs, judged)
    if not found:
        return (), ()
    detail = "; ".join(f"{name}: {', '.join(p)}" for name, p in found.items())
    if force:
        return (), (f"--force: going on although {detail}",)
    refusal = Refusal(
        None,
        f"{command} refused: {detail}. These hosts may hold another cluster (a wrong "
        f"inventory or address?). {forced.rstrip('.')}",
        override=override,
    )
    return (refusal,), ()
