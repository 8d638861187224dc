"""`destroy`: what tearing the cluster down takes (pure).

Decisions: whether every host is this cluster's (refused before any host changes when one
may hold another cluster or a member this inventory does not describe; --force goes on,
with a warning); per host, what happens to its data dir (removed when it carries this
cluster's marker, or with --force whatever it holds; kept otherwise, and a symlink always);
whether the local state dir goes too (--purge-state; kept while a host keeps its data dir,
since the CA and cluster-id are what prove whose that data is).

Steps, in the order they run: [destroy HOST] on every host at once (stop etcd, remove its
unit, files, run lock and, per the decision above, the data dir with its on-host backups
and the etcd user), then [state] the local purge, with --purge-state.
"""

from __future__ import annotations

from orchestrator.core.identity import IdentityObserved, identity_refusals
from orchestrator.core.inventory import Inventory
from orchestrator.core.ownership import DATA_RULE, DirFacts, judge
from orchestrator.core.plan import Noop, Plan, Step

FORCED = "--force destroys them anyway, data dirs included"
TEARDOWN = (
    "stop and disable etcd and the backup timer; remove their units, the binaries, "
    "etcd-deploy's config files and the run lock"
)


def data_fate(inv: Inventory, obs: IdentityObserved, name: str, *, force: bool) -> tuple[str, str]:
    """(what happens to `name`'s data dir, why), as the teardown script decides it on the
    host: "remove", "keep" or "none" (there is none)."""
    data_dir = inv.cluster.data_dir
    folder = obs.facts[name].folders.get(data_dir, DirFacts())
    if folder.link:
        return "keep", f"{data_dir} is a symlink to {folder.link}: never followed"
    if not folder.exists:
        return "none", f"no {data_dir}"
    if force:
        return "remove", "--force: whatever it holds"
    verdict = judge(data_dir, folder, DATA_RULE, obs.marker)
    if verdict.state == "ours":
        return "remove", "marked as this cluster's"
    return "keep", f"{data_dir} carries no marker of this cluster; --force removes it"


def _teardown_step(inv: Inventory, obs: IdentityObserved, name: str, *, force: bool) -> Step:
    fate, why = data_fate(inv, obs, name, force=force)
    data_dir = inv.cluster.data_dir
    if fate == "remove":
        action = f"{TEARDOWN}; remove {data_dir}, the on-host backups and the etcd user"
    elif fate == "keep":
        action = f"{TEARDOWN}; keep {data_dir}"
    else:
        action = TEARDOWN
    return Step(
        "destroy",
        name,
        action,
        why,
        destructive=True,
        parallel=True,
        args={"force": force, "marker": obs.marker, "keeps_data": fate == "keep"},
    )


def plan_destroy(
    inv: Inventory, obs: IdentityObserved, *, force: bool = False, purge_state: bool = False
) -> Plan:
    """Tear down every host read in `obs` (the inventory's hosts), then, with
    `purge_state`, the local state dir."""
    refusals, warnings = identity_refusals(
        inv, obs, command="destroy", force=force, forced=FORCED, override="--force"
    )
    if refusals:
        return Plan("destroy", refusals=refusals)
    steps = [_teardown_step(inv, obs, name, force=force) for name in obs.facts]
    state = inv.cluster.state_dir
    keeping = [s.host for s in steps if s.host and s.args["keeps_data"]]
    noops = []
    if not purge_state:
        noops.append(
            Noop(
                None, f"local state kept in {state} (CA, certs, backups); --purge-state removes it"
            )
        )
    elif keeping:
        steps.append(
            Step(
                "state",
                None,
                f"keep the local state in {state}",
                f"{', '.join(keeping)} keep their data dir, and its CA and cluster-id are "
                "what proves whose that data is; remove them first, then destroy --purge-state",
                kind="purge-state",
                changes=False,
            )
        )
    else:
        steps.append(
            Step(
                "state",
                None,
                f"remove what etcd-deploy wrote in {state} (CA, certs, cluster-id, this "
                "cluster's backups), then the folder if nothing else is left",
                "--purge-state; only once every host's data dir is gone",
                kind="purge-state",
                destructive=True,
            )
        )
    return Plan("destroy", steps=tuple(steps), noops=tuple(noops), warnings=warnings)
