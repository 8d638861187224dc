"""`restart` and `defrag`: rolling maintenance through the rolling engine."""

from __future__ import annotations

from orchestrator.adapters.etcd_api import Member
from orchestrator.core.inventory import Host
from orchestrator.engine.cluster import observe
from orchestrator.engine.context import RunContext
from orchestrator.engine.hosts import locked_hosts
from orchestrator.engine.phases import start_and_wait
from orchestrator.engine.rolling import roll
from orchestrator.ui import human_size


def _hosts(ctx: RunContext, names: list[str]) -> list[Host]:
    return [ctx.inv.host(n) for n in names] if names else list(ctx.inv.hosts)


def run_restart(ctx: RunContext, names: list[str], *, dry_run: bool) -> int:
    """Restart etcd on `names` (default all), one member at a time, leader last."""
    hosts = _hosts(ctx, names)
    with locked_hosts(ctx, "restart", [] if dry_run else [h.name for h in hosts]):
        roll(
            ctx,
            hosts,
            lambda host, _m: start_and_wait(ctx, host, f"restart {host.name}", restart=True),
            phase="restart",
            describe="restart etcd",
            dry_run=dry_run,
        )
    return 0


def run_defrag(ctx: RunContext, *, threshold: float, dry_run: bool) -> int:
    """Defragment each member whose DB has at least `threshold` percent free space inside,
    one at a time, leader last; then disarm a NOSPACE alarm."""
    client = ctx.client()

    def defrag(host: Host, member: Member) -> None:
        phase = f"defrag {host.name}"
        endpoint = member.client_urls[0]
        before = client.status(endpoint)
        free = 100.0 * (before.db_size - before.db_size_in_use) / max(before.db_size, 1)
        if free < threshold:
            ctx.ui.info(
                phase,
                f"skipped: {free:.0f}% free inside the DB ({human_size(before.db_size)}), "
                f"below the {threshold:g}% threshold",
            )
            return
        client.defragment(endpoint)
        after = client.status(endpoint)
        ctx.ui.info(phase, f"DB {human_size(before.db_size)} -> {human_size(after.db_size)}")

    names = [] if dry_run else [h.name for h in ctx.inv.hosts]
    with locked_hosts(ctx, "defrag", names, tolerate_unreachable=True):
        roll(
            ctx,
            list(ctx.inv.hosts),
            defrag,
            phase="defrag",
            describe=f"defragment if at least {threshold:g}% of its DB is free",
            dry_run=dry_run,
            tolerate=("NOSPACE",),  # defrag is how the space comes back
        )
    if dry_run:
        return 0
    view = observe(client)
    for member_id, alarm in view.alarms:
        if alarm == "NOSPACE":
            client.disarm(member_id, alarm)
            ctx.ui.info("defrag", f"NOSPACE alarm of member {member_id:x} disarmed")
    return 0
