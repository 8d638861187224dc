"""`destroy --yes`: stop and remove etcd, its files and its data on every host.

Observe: [facts] of every host with what proves whose it is (and the run locks; a dry run
reads without them). Plan (`core.planners.destroy`): refused, before any host changes, when
a host holds another cluster or a member this inventory does not describe. Execute:
[destroy HOST] in parallel: only etcd-deploy's own files, and a data dir only when it
carries this cluster's marker -> [state] the local state dir, with --purge-state: only what
etcd-deploy wrote there, and only when no host kept its data dir.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.adapters.state_dir import purge_state_dir
from orchestrator.core.errors import EXIT_OK
from orchestrator.core.plan import Step
from orchestrator.core.planners.destroy import plan_destroy
from orchestrator.engine.context import RunContext
from orchestrator.engine.executor import Execution, Handler, execute, show_plan
from orchestrator.engine.hosts import release_locks
from orchestrator.engine.identity import lock_and_read, observe_identity, read_unlocked
from orchestrator.engine.operations import teardown_script


def run_destroy(
    ctx: RunContext,
    *,
    purge_state: bool,
    force: bool = False,
    dry_run: bool = False,
    as_json: bool = False,
) -> int:
    """Tear every host down (see the module docstring); a dry run prints the plan and
    returns its exit code."""
    names = [h.name for h in ctx.inv.hosts]
    if dry_run:
        plan = plan_destroy(
            ctx.inv,
            observe_identity(ctx, read_unlocked(ctx, names)),
            force=force,
            purge_state=purge_state,
        )
        return show_plan(ctx, plan, as_json=as_json)
    owner, facts = lock_and_read(ctx, "destroy", names)
    try:
        plan = plan_destroy(
            ctx.inv, observe_identity(ctx, facts), force=force, purge_state=purge_state
        )
        refused = plan.refusal_error()
        if refused is not None:
            raise refused
    except BaseException:  # refused, or the state dir unreadable: nothing runs
        release_locks(ctx, owner, list(facts))
        raise
    for warning in plan.warnings:
        ctx.ui.warn(plan.command, warning)
    # The run locks go with the rest of etcd-deploy's files (the teardown removes them).
    execute(ctx, plan, _Destroy(ctx).handlers())
    for noop in plan.noops:
        ctx.ui.info(plan.command, noop.reason)
    return EXIT_OK


@dataclass
class _Destroy:
    """The handlers of one run, and what the hosts said: those that kept their data dir."""

    ctx: RunContext
    kept: list[str] = field(default_factory=list)

    def handlers(self) -> dict[str, Handler]:
        return {"destroy": self.teardown, "purge-state": self.purge_state}

    def teardown(self, step: Step, _run: Execution) -> None:
        ctx = self.ctx
        assert step.host is not None
        script = teardown_script(
            ctx.inv, wipe_data=True, marker=step.args["marker"], force=step.args["force"]
        )
        said = ctx.conn(step.host).run(script).stdout.strip().splitlines()
        kept = [line for line in said if line.startswith("kept ")]
        for line in kept:
            ctx.ui.warn(f"destroy {step.host}", line + "; remove it by hand if it is ours")
        if kept:
            self.kept.append(step.host)
        what = "unit, files, data and user removed" if not kept else "unit and files removed"
        ctx.ui.info(f"destroy {step.host}", f"etcd stopped; {what}")

    def purge_state(self, _step: Step, _run: Execution) -> None:
        """Whatever the plan predicted, what the hosts said decides: a data dir kept on a
        host keeps the CA and cluster-id that prove whose it is."""
        ctx = self.ctx
        state = ctx.inv.cluster.state_dir
        if self.kept:
            ctx.ui.warn(
                "destroy",
                f"local state kept in {state}: its CA and cluster-id are what proves whose the "
                "data dirs kept on the hosts are; remove them first, then destroy --purge-state",
            )
            return
        left = purge_state_dir(state, ctx.inv.cluster.name)
        if left:
            ctx.ui.warn(
                "destroy",
                f"local state removed from {state}; kept what etcd-deploy did not write "
                f"there: {', '.join(left)}",
            )
        else:
            ctx.ui.info("destroy", f"local state {state} removed (CA, certs, backups)")
