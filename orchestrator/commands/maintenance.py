"""`restart` and `defrag`: rolling maintenance. Observe the cluster, plan
(`core.planners.restart` / `core.planners.defrag`), then print the plan (dry run) or run it
through the executor, whose rolling steps go through the rolling engine."""

from __future__ import annotations

from orchestrator.core.errors import EXIT_OK
from orchestrator.core.plan import Plan, Step
from orchestrator.core.planners.defrag import TOLERATE, below_threshold, plan_defrag
from orchestrator.core.planners.restart import plan_restart
from orchestrator.core.planners.rolling import NOT_A_MEMBER
from orchestrator.core.units import human_size
from orchestrator.engine.cluster import observe
from orchestrator.engine.context import RunContext
from orchestrator.engine.executor import Execution, execute, show_plan
from orchestrator.engine.hosts import locked_hosts
from orchestrator.engine.phases import start_and_wait


def _tell_noops(ctx: RunContext, plan: Plan) -> None:
    """A real run says what it leaves alone, as the rolling engine always said it."""
    for noop in plan.noops:
        where = f"{plan.command} {noop.host}"
        if noop.reason == NOT_A_MEMBER:
            ctx.ui.warn(where, f"{NOT_A_MEMBER}; skipped")
        else:
            ctx.ui.info(where, f"skipped: {noop.reason}")


# --------------------------------------------------------------------------- restart


def _restart(step: Step, run: Execution) -> None:
    ctx = run.ctx
    assert step.host is not None
    start_and_wait(ctx, ctx.inv.host(step.host), f"restart {step.host}", restart=True)


RESTART_HANDLERS = {"restart": _restart}


def run_restart(ctx: RunContext, names: list[str], *, dry_run: bool, as_json: bool = False) -> int:
    """Restart etcd on `names` (default all), one member at a time, leader last."""
    names = [ctx.inv.host(n).name for n in names]  # an unknown name: usage error, no call
    if dry_run:
        return show_plan(ctx, plan_restart(ctx.inv, observe(ctx.client()), names), as_json=as_json)
    with locked_hosts(ctx, "restart", names or [h.name for h in ctx.inv.hosts]):
        plan = plan_restart(ctx.inv, observe(ctx.client()), names)
        _tell_noops(ctx, plan)
        execute(ctx, plan, RESTART_HANDLERS)
    return EXIT_OK


# --------------------------------------------------------------------------- defrag


def _defrag(step: Step, run: Execution) -> None:
    ctx = run.ctx
    client = ctx.client()
    phase = f"defrag {step.host}"
    endpoint = step.args["member"].client_urls[0]
    before = client.status(endpoint)
    # The planner chose this member from the sizes seen before the roll; writes and
    # compactions change them until its turn, so the same rule is checked again now.
    why = below_threshold(before, step.args["threshold"])
    if why is not None:
        ctx.ui.info(phase, f"skipped: {why}")
        return
    client.defragment(endpoint)
    after = client.status(endpoint)
    ctx.ui.info(phase, f"DB {human_size(before.db_size)} -> {human_size(after.db_size)}")


def _disarm(_step: Step, run: Execution) -> None:
    """Every NOSPACE alarm raised once the members are done (not only those planned for:
    one raised during the roll is disarmed too)."""
    client = run.ctx.client()
    for member_id, alarm in observe(client).alarms:
        if alarm == "NOSPACE":
            client.disarm(member_id, alarm)
            run.ctx.ui.info("defrag", f"NOSPACE alarm of member {member_id:x} disarmed")


DEFRAG_HANDLERS = {"defrag": _defrag, "disarm": _disarm}


def run_defrag(ctx: RunContext, *, threshold: float, dry_run: bool, as_json: bool = False) -> int:
    """Defragment each member whose DB has at least `threshold` percent free space inside,
    one at a time, leader last; then disarm a NOSPACE alarm."""
    if dry_run:
        view = observe(ctx.client(), tolerate=TOLERATE)
        return show_plan(ctx, plan_defrag(ctx.inv, view, threshold), as_json=as_json)
    names = [h.name for h in ctx.inv.hosts]
    with locked_hosts(ctx, "defrag", names, tolerate_unreachable=True):
        plan = plan_defrag(ctx.inv, observe(ctx.client(), tolerate=TOLERATE), threshold)
        _tell_noops(ctx, plan)
        execute(ctx, plan, DEFRAG_HANDLERS)
    return EXIT_OK
