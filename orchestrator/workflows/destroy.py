"""`destroy --yes`: stop and remove etcd, its files and its data on every host."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from orchestrator.context import RunContext
from orchestrator.lock import new_owner
from orchestrator.operations import teardown_script
from orchestrator.workflows.hosts import gather_facts, raise_for_failures

if TYPE_CHECKING:
    from orchestrator.transport import HostConnection


def run_destroy(ctx: RunContext, *, purge_state: bool) -> None:
    script = teardown_script(ctx.inv, wipe_data=True)
    names = [h.name for h in ctx.inv.hosts]
    gather_facts(ctx, new_owner("destroy"), {}, names)  # the run lock; removed with the rest

    def one(conn: HostConnection) -> None:
        conn.run(script)
        ctx.ui.info(f"destroy {conn.name}", "etcd stopped; unit, files, data and user removed")

    results = ctx.pool.map(one, names)
    raise_for_failures(ctx, "destroy", results)
    state = ctx.inv.cluster.state_dir
    if purge_state:
        shutil.rmtree(state, ignore_errors=True)
        ctx.ui.info("destroy", f"local state {state} removed (CA, certs, backups)")
    else:
        ctx.ui.info(
            "destroy", f"local state kept in {state} (CA, certs, backups); --purge-state removes it"
        )
