"""Identity before any destructive step: the reading half. Each host's facts (its CA file
and etcd.env with them) and whose CA it trusts, compared with this state dir's CAs; the
judgement (which hosts may hold another cluster, what --force overrides) is pure, in
`orchestrator.core.identity`, and planners turn it into refusals.

Used by destroy, restore, remove-node and replace-node, each through its planner."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from orchestrator.adapters.lock import new_owner
from orchestrator.adapters.pki import pem_fingerprints
from orchestrator.core.facts import HostFacts
from orchestrator.core.host_lock import LockOwner
from orchestrator.core.host_plan import DesiredFile, ca_file, env_file
from orchestrator.core.identity import IdentityObserved, identity_paths
from orchestrator.core.ownership import ca_trust
from orchestrator.engine.context import RunContext
from orchestrator.engine.hosts import gather_facts, read_facts

if TYPE_CHECKING:
    pass


def identity_files(ctx: RunContext, names: Collection[str]) -> dict[str, list[DesiredFile]]:
    """The facts request that carries what the judgement reads: the CA and etcd.env."""
    wanted = [ca_file(ctx.inv, b""), env_file(ctx.inv, "")]
    return {name: wanted for name in names}


def lock_and_read(
    ctx: RunContext, command: str, names: list[str], *, tolerate_unreachable: bool = False
) -> tuple[LockOwner, dict[str, HostFacts]]:
    """Facts (with what the judgement reads) and the run locks of `names` (the state dir's
    lock first)."""
    owner = new_owner(command)
    facts = gather_facts(
        ctx, owner, identity_files(ctx, names), names, tolerate_unreachable=tolerate_unreachable
    )
    return owner, facts


def read_unlocked(
    ctx: RunContext,
    names: list[str],
    files: dict[str, list[DesiredFile]] | None = None,
    *,
    tolerate_unreachable: bool = False,
) -> dict[str, HostFacts]:
    """For a dry run: the facts, read without any lock (`hosts.read_facts`). `files`
    default: what the judgement reads."""
    wanted = files if files is not None else identity_files(ctx, names)
    return read_facts(ctx, wanted, names, tolerate_unreachable=tolerate_unreachable)


def observe_identity(ctx: RunContext, facts: dict[str, HostFacts]) -> IdentityObserved:
    """What the judgement needs besides `facts`: whose CA each host trusts (compared with
    every CA this state dir has held; "unknown" when it has none) and our marker (never
    made here)."""
    known = ctx.pki.known_ca_fingerprints() if ctx.pki.ca_cert_path.exists() else set()
    ca_path = identity_paths(ctx.inv)[0]
    trust = {
        name: ca_trust(pem_fingerprints(f.texts.get(ca_path, "").encode()), known)
        for name, f in facts.items()
    }
    return IdentityObserved(facts, trust, ctx.marker(create=False))
