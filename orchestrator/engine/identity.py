"""Identity before any destructive step: read each host and refuse, before anything stops
or is removed, when it holds another cluster or a member this inventory does not describe.
Used by destroy, remove-node, replace-node and restore (the rules are in `ownership.py`)."""

from __future__ import annotations

from orchestrator.adapters.lock import LockOwner, new_owner
from orchestrator.adapters.pki import pem_fingerprints
from orchestrator.core.errors import SafetyRefusal
from orchestrator.core.facts import HostFacts
from orchestrator.core.host_plan import CONFIG_FILES, DesiredFile, ca_file, env_file
from orchestrator.core.ownership import (
    DirFacts,
    FolderRule,
    HostIdentity,
    Marker,
    ca_trust,
    identity_problems,
    judge,
)
from orchestrator.core.render import env_values, pki_paths
from orchestrator.engine.context import RunContext
from orchestrator.engine.hosts import gather_facts, release_locks

DATA_RULE = FolderRule("cluster.data_dir")
# etcd.env is another tool's as often as ours (etcdadm's layout): proven by its content.
CONFIG_RULE = FolderRule("cluster.config_dir", frozenset({*CONFIG_FILES, "pki"} - {"etcd.env"}))
ETCD_DATA = frozenset({"member"})
OUR_ENV = frozenset({"etcd.env"})


def identity_files(ctx: RunContext, names: list[str]) -> dict[str, list[DesiredFile]]:
    """The facts request that carries what `host_identity` reads: the CA and etcd.env."""
    wanted = [ca_file(ctx.inv, b""), env_file(ctx.inv, "")]
    return {name: wanted for name in names}


def host_identity(
    ctx: RunContext, facts: HostFacts, known_cas: set[str], marker: Marker
) -> HostIdentity:
    """What `facts` (read with `identity_files`) say about whose etcd the host holds.
    `known_cas`: the fingerprints of this state dir's CAs (empty when it has none)."""
    c = ctx.inv.cluster
    trusted = pem_fingerprints(facts.texts.get(pki_paths(ctx.inv)["ca.crt"], "").encode())
    empty = DirFacts()
    return HostIdentity(
        holds_cluster=facts.holds_cluster,
        env=env_values(facts.texts.get(f"{c.config_dir}/etcd.env", "")),
        ca=ca_trust(trusted, known_cas),
        data=judge(
            c.data_dir, facts.folders.get(c.data_dir, empty), DATA_RULE, marker, proven=ETCD_DATA
        ),
        config=judge(
            c.config_dir,
            facts.folders.get(c.config_dir, empty),
            CONFIG_RULE,
            marker,
            proven=OUR_ENV,
        ),
        links=tuple(sorted(facts.links)),
    )


def refuse_foreign_hosts(
    ctx: RunContext, facts: dict[str, HostFacts], *, command: str, force: bool, forced: str
) -> None:
    """SafetyRefusal naming every host that may not be ours and what was found there,
    unless `force` (`forced` says what --force does instead)."""
    known = ctx.pki.known_ca_fingerprints() if ctx.pki.ca_cert_path.exists() else set()
    marker = ctx.marker(create=False)
    found = {}
    for name, f in facts.items():
        host = ctx.inv.host(name)
        who = host_identity(ctx, f, known, marker)
        problems = identity_problems(ctx.inv.cluster.name, name, ctx.inv.peer_url(host), who)
        if problems:
            found[name] = problems
    if not found:
        return
    detail = "; ".join(f"{name}: {', '.join(p)}" for name, p in found.items())
    if force:
        ctx.ui.warn(command, f"--force: going on although {detail}")
        return
    raise SafetyRefusal(
        f"{command} refused: {detail}. These hosts may hold another cluster (a wrong "
        f"inventory or address?); nothing was changed. {forced}"
    )


def gather_identified(
    ctx: RunContext,
    command: str,
    names: list[str],
    *,
    force: bool,
    forced: str,
    phase: str = "",
    judged: list[str] | None = None,
    tolerate_unreachable: bool = False,
) -> tuple[LockOwner, dict[str, HostFacts]]:
    """Facts and run locks of `names`, then `refuse_foreign_hosts` on `judged` (default: all
    of them); a refusal lets the locks go before it is raised."""
    owner = new_owner(command)
    facts = gather_facts(
        ctx, owner, identity_files(ctx, names), names, tolerate_unreachable=tolerate_unreachable
    )
    try:
        chosen = {n: f for n, f in facts.items() if judged is None or n in judged}
        refuse_foreign_hosts(ctx, chosen, command=phase or command, force=force, forced=forced)
    except BaseException:
        release_locks(ctx, owner, list(facts))
        raise
    return owner, facts
