"""`restore SNAPSHOT --yes` and `up --from-snapshot`: a new cluster from one snapshot file.

Phases: [verify] the file (before anything stops) -> [facts] and locks -> [certs] ->
[install HOST] -> [stop] -> [restore HOST] (old data dir moved aside, never deleted) ->
[start] all members -> [done] with key count and revision.
"""

from __future__ import annotations

import secrets
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.adapters.snapshot import verify_integrity
from orchestrator.commands.backup import status_of_snapshot
from orchestrator.core.errors import SafetyRefusal, UsageError
from orchestrator.core.host_plan import plan_host
from orchestrator.core.inventory import Host
from orchestrator.core.ownership import RESTORE_PREFIX, DirFacts
from orchestrator.core.versions import parse_version
from orchestrator.engine.cluster import wait_healthy
from orchestrator.engine.context import RunContext
from orchestrator.engine.hosts import gather_facts, raise_for_failures, release_locks
from orchestrator.engine.identity import gather_identified
from orchestrator.engine.operations import aside_lines, marker_lines
from orchestrator.engine.phases import (
    START_TIMEOUT,
    Observed,
    desired_for,
    fetch_releases,
    install_hosts,
    issue_certs,
    member_env,
    start_new_cluster,
)

if TYPE_CHECKING:
    from orchestrator.adapters.transport import HostConnection

q = shlex.quote
RESTORE_TIMEOUT = 3600.0  # the upload of a large snapshot, then etcd's own restore


def restore_command(
    ctx: RunContext,
    host: Host,
    snapshot: str,
    token: str,
    bump_revision: int | None,
    mark_compacted: bool,
    data_dir: str | None = None,
) -> str:
    """etcd's own restore for one member (etcdutl from 3.5, etcdctl on 3.4)."""
    inv = ctx.inv
    c = inv.cluster
    tool = (
        f"{q(c.install_dir)}/etcdutl"
        if parse_version(c.etcd_version) >= parse_version("3.5.0")
        else f"ETCDCTL_API=3 {q(c.install_dir)}/etcdctl"
    )
    args = [
        "snapshot",
        "restore",
        snapshot,
        "--name",
        host.name,
        "--data-dir",
        data_dir or c.data_dir,
        "--initial-cluster",
        inv.initial_cluster(),
        "--initial-cluster-token",
        token,
        "--initial-advertise-peer-urls",
        inv.peer_url(host),
    ]
    if bump_revision:
        args += ["--bump-revision", str(bump_revision)]
    if mark_compacted:
        args.append("--mark-compacted")
    return f"{tool} " + " ".join(q(a) for a in args)


def restore_script(
    ctx: RunContext,
    host: Host,
    token: str,
    sha256: str,
    stamp: str,
    bump_revision: int | None,
    mark_compacted: bool,
    *,
    mount_point: bool,
) -> str:
    """Restore from the snapshot on stdin next to the data dir, and only once the file
    arrived whole (its sha256) and etcd's own restore succeeded (it checks the snapshot's
    hash): stop etcd, move the old data aside (never deleted; a mount point keeps its
    place), put the restored member in, mark and own it."""
    c = ctx.inv.cluster
    data = q(c.data_dir)
    snap = f"/var/tmp/etcd-deploy-restore-{token}.db"
    # Next to the data dir, on its file system: inside it when it is a mount point.
    if mount_point:
        stage = f"{c.data_dir}/{RESTORE_PREFIX}{token}"
    else:
        stage = f"{c.data_dir}.etcd-deploy-restore-{token}"
    return "\n".join(
        [
            "set -e",
            "umask 077",
            "trap '' PIPE",  # a connection lost from here on must not kill it half-way
            f"trap 'rm -f {snap}' EXIT",
            f"cat > {snap}",
            f"printf '%s  %s\\n' {sha256} {snap} | sha256sum -c --quiet --strict -",
            # What restores cut short left: ours, by their names.
            f"rm -rf {data}.etcd-deploy-restore-* {data}/{RESTORE_PREFIX}*",
            restore_command(ctx, host, snap, token, bump_revision, mark_compacted, stage),
            "systemctl stop etcd.service 2>/dev/null || true",
            "aside=$(",
            *aside_lines(c.data_dir, f"before-restore-{stamp}"),
            ")",
            f"if [ -d {data} ]; then mv -T {q(stage)}/member {data}/member; rm -rf {q(stage)}; "
            f"else mv -T {q(stage)} {data}; fi",
            f"chown -R etcd:etcd {data}/member",  # not what was moved aside inside it
            f"chown etcd:etcd {data}",
            f"chmod 0700 {data}",
            *marker_lines(c.data_dir, ctx.marker()),
            'echo "$aside"',
        ]
    )


def _check_restore_flags(ctx: RunContext, name: str) -> None:
    """Older etcdutl lacks --bump-revision/--mark-compacted: find out before anything stops."""
    tool = restore_command(ctx, ctx.inv.host(name), "x", "x", None, False).split(" snapshot ")[0]
    help_text = ctx.conn(name).run(f"{tool} snapshot restore --help 2>&1", check=False).stdout
    if "--bump-revision" not in help_text or "--mark-compacted" not in help_text:
        raise SafetyRefusal(
            f"etcd {ctx.inv.cluster.etcd_version}'s restore tool has no --bump-revision/"
            "--mark-compacted; restore without them, or with a newer etcd_version; "
            "nothing was stopped"
        )


def run_restore(
    ctx: RunContext,
    snapshot: Path,
    *,
    yes: bool,
    bump_revision: int | None = None,
    mark_compacted: bool = False,
    fresh_only: bool = False,
) -> int:
    """Restore every inventory host from `snapshot`. `fresh_only` is `up --from-snapshot`:
    refused when any host holds data or runs etcd."""
    inv = ctx.inv
    if snapshot.is_dir():
        raise UsageError(f"{snapshot}: is a folder, not a snapshot file; nothing was changed")
    if not snapshot.is_file():
        raise UsageError(f"{snapshot}: no such snapshot file; nothing was changed")
    sha256 = verify_integrity(snapshot)
    status = status_of_snapshot(ctx, snapshot)
    about = (
        f"revision {status.revision}, {status.total_keys} keys" if status else "integrity hash ok"
    )
    ctx.ui.info("verify", f"{snapshot.name}: sha256 {sha256}, {about}")
    stamp = time.strftime("%Y%m%d%H%M%S")
    data_dir = inv.cluster.data_dir
    aside = f"{data_dir}.before-restore-{stamp}"  # or inside it, for a mount point
    if not yes and not fresh_only:
        ctx.ui.print("restore would, on every host (nothing was changed; add --yes to do it):")
        for host in inv.hosts:
            ctx.ui.print(
                f"  {host.name}: stop etcd; move {inv.cluster.data_dir} aside to {aside}; "
                f"restore member {host.name} from {snapshot.name}; start etcd"
            )
        return 0
    names = [h.name for h in inv.hosts]
    owner, facts = gather_identified(
        ctx,
        "restore",
        names,
        force=False,
        forced="Check the inventory: restore replaces the data of every host it names. Only "
        "when those hosts are known to be this cluster's: etcd-deploy destroy --force, then "
        "up --from-snapshot.",
    )
    try:
        if fresh_only:
            busy = [n for n, f in facts.items() if f.holds_cluster]
            if busy:
                raise SafetyRefusal(
                    f"--from-snapshot makes a brand-new cluster, but {', '.join(busy)} already "
                    f"hold etcd data or run etcd; to replace that data: etcd-deploy restore "
                    f"{snapshot} --yes"
                )
        token = f"{inv.cluster.name}-{secrets.token_hex(6)}"
        obs = Observed(facts, None, token, issue_certs(ctx))
        paths = {
            h.name: desired_for(ctx, h, obs, env=member_env(ctx, h, obs, state="new", static=True))
            for h in inv.hosts
        }
        facts = gather_facts(ctx, owner, paths, names)  # again, now with file hashes
        obs.facts = facts
        plans = {
            n: plan_host(
                inv,
                inv.host(n),
                paths[n],
                facts[n],
                version=inv.cluster.etcd_version,
                member=False,
                bootstrap=True,
            )
            for n in names
        }
        install_hosts(ctx, obs, plans, fetch_releases(ctx, obs, plans)).finish()
        if bump_revision or mark_compacted:
            _check_restore_flags(ctx, names[0])
        data = snapshot.read_bytes()

        def restore_one(conn: HostConnection) -> None:
            host = inv.host(conn.name)
            said = conn.run(
                restore_script(
                    ctx,
                    host,
                    token,
                    sha256,
                    stamp,
                    bump_revision,
                    mark_compacted,
                    mount_point=facts[conn.name].folders.get(data_dir, DirFacts()).mount_point,
                ),
                stdin=data,
                timeout=RESTORE_TIMEOUT,
            ).stdout.split()
            moved = said[-1] if said else "none"
            ctx.ui.info(f"restore {conn.name}", f"member restored (old data, if any: {moved})")

        raise_for_failures(ctx, "restore", ctx.pool.map(restore_one, names))
        raise_for_failures(ctx, "start", start_new_cluster(ctx, list(inv.hosts)))
        wait_healthy(ctx.client(), timeout=START_TIMEOUT)
    finally:
        release_locks(ctx, owner, names)
    keys, revision = ctx.client().count_keys(inv.client_url(inv.hosts[0]))
    ctx.ui.info(
        "done",
        f"cluster {inv.cluster.name} restored from {snapshot.name}: {len(names)} members "
        f"healthy, {keys} keys, revision {revision}",
    )
    return 0
