"""`destroy --yes`: stop and remove etcd, its files and its data on every host.

Phases: [facts] of every host (and the run locks) -> [identity]: refused, before any host
changes, when a host holds another cluster or a member this inventory does not describe ->
[destroy HOST] in parallel: only etcd-deploy's own files, and a data dir only when it
carries this cluster's marker -> [state] the local state dir, with --purge-state: only
what etcd-deploy wrote there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.adapters.state_dir import purge_state_dir
from orchestrator.engine.context import RunContext
from orchestrator.engine.hosts import raise_for_failures
from orchestrator.engine.identity import gather_identified
from orchestrator.engine.operations import teardown_script

if TYPE_CHECKING:
    from orchestrator.adapters.transport import HostConnection


def run_destroy(ctx: RunContext, *, purge_state: bool, force: bool = False) -> None:
    names = [h.name for h in ctx.inv.hosts]
    gather_identified(
        ctx,
        "destroy",
        names,
        force=force,
        forced="--force destroys them anyway, data dirs included",
    )  # the run locks go with the rest of etcd-deploy's files
    script = teardown_script(ctx.inv, wipe_data=True, marker=ctx.marker(create=False), force=force)

    def one(conn: HostConnection) -> bool:
        said = conn.run(script).stdout.strip().splitlines()
        kept = [line for line in said if line.startswith("kept ")]
        for line in kept:
            ctx.ui.warn(f"destroy {conn.name}", line + "; remove it by hand if it is ours")
        what = "unit, files, data and user removed" if not kept else "unit and files removed"
        ctx.ui.info(f"destroy {conn.name}", f"etcd stopped; {what}")
        return bool(kept)

    results = ctx.pool.map(one, names)
    raise_for_failures(ctx, "destroy", results)
    state = ctx.inv.cluster.state_dir
    if purge_state and any(r.value for r in results.values()):
        ctx.ui.warn(
            "destroy",
            f"local state kept in {state}: its CA and cluster-id are what proves whose the "
            "data dirs kept on the hosts are; remove them first, then destroy --purge-state",
        )
    elif purge_state:
        left = purge_state_dir(state, ctx.inv.cluster.name)
        if left:
            ctx.ui.warn(
                "destroy",
                f"local state removed from {state}; kept what etcd-deploy did not write "
                f"there: {', '.join(left)}",
            )
        else:
            ctx.ui.info("destroy", f"local state {state} removed (CA, certs, backups)")
    else:
        ctx.ui.info(
            "destroy", f"local state kept in {state} (CA, certs, backups); --purge-state removes it"
        )
