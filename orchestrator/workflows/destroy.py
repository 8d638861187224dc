"""`destroy --yes`: stop and remove etcd, its files and its data on every host."""

from __future__ import annotations

import shlex
import shutil

from orchestrator.context import RunContext
from orchestrator.lock import LOCK_PATH, new_owner
from orchestrator.plan import UNIT_PATH
from orchestrator.transport import HostConnection
from orchestrator.workflows.hosts import gather_facts, raise_for_failures


def destroy_script(ctx: RunContext) -> str:
    c = ctx.inv.cluster
    q = shlex.quote
    return "\n".join(
        [
            "systemctl disable --now etcd.service >/dev/null 2>&1 || true",
            f"rm -f {UNIT_PATH}",
            "systemctl daemon-reload",
            "systemctl reset-failed etcd.service >/dev/null 2>&1 || true",
            f"rm -rf {q(c.config_dir)} {q(c.data_dir)}",
            *(
                f"rm -f {q(c.install_dir)}/{b} {q(c.install_dir)}/{b}.prev"
                for b in ("etcd", "etcdctl", "etcdutl", "etcdctl.sh")
            ),
            f"rmdir {q(c.install_dir)} 2>/dev/null || true",
            "userdel etcd >/dev/null 2>&1 || true",
            "groupdel etcd >/dev/null 2>&1 || true",
            f"rm -f {LOCK_PATH}",
        ]
    )


def run_destroy(ctx: RunContext, *, purge_state: bool) -> None:
    script = destroy_script(ctx)
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
