"""`remove-node` (and the first half of `replace-node`): what removing a member takes (pure).

Decisions: whose the host is (another cluster's is refused, whatever --force says: --force is
about quorum only); which member is the host (matched by name and peer URL; a host where
etcd runs that matches no member is refused: a stale inventory must never stop and wipe a
live voter); whether the cluster keeps its quorum without it (`quorum.check_remove`).
Steps: hand leadership over (when it leads), remove the member, clean the host (when it
was reachable), drop it from the inventory. `add-node` is `up` on one host
(`planners.up`, with `only`).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.core.cluster_view import ClusterView
from orchestrator.core.identity import IdentityObserved, identity_refusals
from orchestrator.core.inventory import Inventory
from orchestrator.core.plan import Noop, Plan, Refusal, Step
from orchestrator.core.quorum import check_remove

NOT_OURS = (
    "Check the inventory; to remove that host's etcd anyway: etcd-deploy destroy --force "
    "with an inventory of that host alone."
)


@dataclass(frozen=True)
class RemoveObserved:
    """The hosts read (an unreachable one is missing from `identity.facts`) and the cluster
    as its members answer."""

    identity: IdentityObserved
    view: ClusterView


def plan_remove_node(
    inv: Inventory, name: str, obs: RemoveObserved, *, wipe: bool, force: bool
) -> Plan:
    host = inv.host(name)
    phase = f"remove {name}"
    refusals, warnings = identity_refusals(
        inv, obs.identity, command=phase, force=False, forced=NOT_OURS, judged=[name]
    )
    if refusals:
        return Plan("remove-node", refusals=refusals, warnings=warnings)
    view = obs.view
    facts = obs.identity.facts
    member, problem = view.match_host(name, inv.peer_url(host))
    if problem:
        return Plan("remove-node", refusals=(Refusal(None, f"[{phase}] refused: {problem}"),))
    steps: list[Step] = []
    noops: list[Noop] = []
    if member is None:
        if name in facts and facts[name].running:
            why = (
                f"[{phase}] refused: etcd runs on {name}, but no member of the cluster has its "
                f"name or peer URL {inv.peer_url(host)}; is the inventory stale?"
            )
            return Plan("remove-node", refusals=(Refusal(None, why),))
        noops.append(Noop(name, f"{name} is not a member of the cluster"))
    else:
        if not member.is_learner:
            verdict = check_remove(
                len(view.voters), view.healthy_voters, view.is_healthy_member(member.id), force
            )
            if not verdict.allowed:
                why = f"[{phase}] refused by rule {verdict.rule}: {verdict.detail}"
                override = "--force" if verdict.rule == "two-to-one" else ""
                return Plan("remove-node", refusals=(Refusal(None, why, override=override),))
        if member.id == view.leader_id:
            steps.append(
                Step(
                    "remove",
                    name,
                    "hand leadership to a healthy, caught-up follower",
                    "it leads the cluster",
                    kind="hand-over",
                    quorum_check=True,
                    args={"member": member},
                )
            )
        role = "learner" if member.is_learner else f"voter, {len(view.voters) - 1} left after"
        steps.append(
            Step(
                "remove",
                name,
                f"remove member {member.id:x}",
                role,
                kind="remove-member",
                destructive=True,
                quorum_check=not member.is_learner,
                args={"member": member},
            )
        )
    if name in facts:
        kept = "" if wipe else f"; keep {inv.cluster.data_dir} (--wipe removes it)"
        steps.append(
            Step(
                "remove",
                name,
                f"stop and disable etcd, remove its files{kept}",
                "its data dir only when it carries this cluster's marker" if wipe else "",
                kind="clean",
                destructive=True,
                args={"wipe": wipe},
            )
        )
    else:
        warnings = (*warnings, f"{name} is unreachable: its files will be left in place")
    steps.append(Step("inventory", None, f"drop {name} from {inv.path}", kind="inventory"))
    return Plan("remove-node", steps=tuple(steps), noops=tuple(noops), warnings=warnings)
