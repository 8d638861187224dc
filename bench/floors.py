"""etcd's own floor for forming a cluster, on hosts where everything is already in place.

A minimal script, not etcd-deploy: binaries, certs, unit and env files are already on the
hosts (staged, untimed); what is timed is only what etcd itself needs.

- learner floor: start the first member; then per other member: `member add --learner`,
  start it, promote it as soon as etcd allows, wait healthy.
- static floor: start every member at once from a static initial cluster, wait healthy.
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor

from orchestrator.core.etcd_unit import START_NO_BLOCK, UNIT
from orchestrator.core.host_plan import env_file
from orchestrator.core.render import render_etcd_env
from orchestrator.engine.cluster import wait_healthy
from orchestrator.engine.context import RunContext
from orchestrator.engine.membership import add_learner, promote
from orchestrator.engine.operations import apply_files

WIPE = f"systemctl stop {UNIT}; rm -rf {{data}}/member"


def _parallel(ctx: RunContext, script: str, names: list[str]) -> None:
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda n: ctx.conn(n).run(script, quiet=True), names))


def _stage(ctx: RunContext, static: bool) -> str:
    """Stop etcd, wipe the data, write each host's env for the scenario. Untimed."""
    inv = ctx.inv
    token = f"floor-{secrets.token_hex(4)}"
    names = [h.name for h in inv.hosts]
    _parallel(ctx, WIPE.format(data=inv.cluster.data_dir), names)
    for i, host in enumerate(inv.hosts):
        founders = inv.hosts if static else inv.hosts[: i + 1]
        env = render_etcd_env(
            inv,
            host,
            initial_cluster=[(h.name, inv.peer_url(h)) for h in founders],
            initial_state="new" if static or i == 0 else "existing",
            token=token,
            version=inv.cluster.etcd_version,
        )
        apply_files(ctx.conn(host), [env_file(inv, env)])
    for name in names:
        ctx.conn(name).open()
    return token


def static_floor(ctx: RunContext) -> float:
    _stage(ctx, static=True)
    names = [h.name for h in ctx.inv.hosts]
    started = time.perf_counter()
    _parallel(ctx, START_NO_BLOCK, names)
    wait_healthy(ctx.client(), timeout=120)
    return time.perf_counter() - started


def learner_floor(ctx: RunContext) -> float:
    _stage(ctx, static=False)
    inv = ctx.inv
    client = ctx.client()
    first, *rest = inv.hosts
    started = time.perf_counter()
    ctx.conn(first).run(f"systemctl start {UNIT}", quiet=True)
    wait_healthy(client, timeout=60, endpoints=[inv.client_url(first)])
    for host in rest:
        member = add_learner(client, inv.peer_url(host))
        ctx.conn(host).run(START_NO_BLOCK, quiet=True)
        promote(client, member.id)
        wait_healthy(client, timeout=60)
    return time.perf_counter() - started
