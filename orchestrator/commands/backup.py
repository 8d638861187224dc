"""`backup`, `backup schedule`, `backup list`: snapshots on the control machine and on the
hosts. Snapshots contain every secret the cluster holds: they are written 0600."""

from __future__ import annotations

import os
import platform
import shlex
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.adapters.local_tools import local_snapshot_status, snapshot_tool
from orchestrator.adapters.localfs import fsync_dir, write_atomic
from orchestrator.adapters.lock import new_owner
from orchestrator.adapters.release import ARCH_BY_UNAME, fetch_release
from orchestrator.adapters.snapshot import (
    SnapshotStatus,
    create_part,
    list_local,
    prune_local,
    publish,
    verify_integrity,
)
from orchestrator.adapters.state_dir import BACKUPS_DIR, SCHEDULE_FILE
from orchestrator.core.errors import EXIT_OK, ClusterUnhealthy, EtcdDeployError, UsageError
from orchestrator.core.etcd_unit import BACKUP_TIMER_OFF, BACKUP_TIMER_ON, DAEMON_RELOAD
from orchestrator.core.host_paths import (
    BACKUP_TIMER_PATH,
    BACKUP_UNIT_PATH,
    HOST_BACKUP_DIR,
    backup_script_path,
)
from orchestrator.core.plan import Step
from orchestrator.core.planners.schedule import plan_schedule
from orchestrator.engine.cluster import observe
from orchestrator.engine.context import RunContext
from orchestrator.engine.executor import Execution, Handler, execute, show_plan
from orchestrator.engine.hosts import locked_hosts
from orchestrator.engine.operations import apply_files

if TYPE_CHECKING:
    from orchestrator.adapters.transport import HostConnection


@dataclass
class BackupResult:
    file: str
    size: int
    sha256: str
    revision: int
    keys: int
    source: str
    checked_by: str  # what read the file back: the integrity hash, and etcd's own tool


def default_backup_dir(ctx: RunContext) -> Path:
    return ctx.inv.cluster.state_dir / BACKUPS_DIR


def status_of_snapshot(ctx: RunContext, path: Path) -> SnapshotStatus | None:
    """etcd's own `snapshot status` run on this machine, when it can run the release."""
    arch = ARCH_BY_UNAME.get(platform.machine())
    if arch is None or platform.system() != "Linux":
        return None
    try:
        c = ctx.inv.cluster
        release = fetch_release(
            c.release_url, c.etcd_version, arch, sha256=c.release_pin(c.etcd_version, arch)
        )
        tool = snapshot_tool(release)
        return local_snapshot_status(tool, path) if tool else None
    except EtcdDeployError as exc:
        ctx.ui.warn("backup", f"etcd's snapshot tool is not available here ({exc})")
        return None


def _check_backup_dir(folder: Path) -> None:
    """`folder` is, or can be made as, a writable folder: said before anything connects."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: not a folder (-o wants the folder for the backups)")
    real = Path(os.path.realpath(folder))
    base = next(p for p in (real, *real.parents) if p.exists())
    pseudo = next((p for p in ("/proc", "/sys", "/dev") if real.is_relative_to(p)), None)
    if pseudo is not None or not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        where = f"it is inside {pseudo}" if pseudo else f"{base} is not a writable folder"
        raise UsageError(f"{folder}: cannot write backups there ({where})")


def run_backup(ctx: RunContext, *, out_dir: Path | None, keep: int | None) -> BackupResult:
    """Snapshot the leader (or another healthy member) into `out_dir`, under the state
    dir's lock (two backups never race for a name; a no-op when the run holds it)."""
    inv = ctx.inv
    folder = out_dir or default_backup_dir(ctx)
    _check_backup_dir(folder)
    ctx.pki.require_ca()  # no cluster of ours to back up: said before the lock makes anything
    ctx.lock_state(new_owner("backup"))
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise UsageError(
            f"{folder}: cannot create the backup folder: {exc.strerror or exc}"
        ) from None
    client = ctx.client()
    view = observe(client)
    healthy = [m for m in view.voters if view.is_healthy_member(m.id) and m.client_urls]
    if not healthy:
        raise ClusterUnhealthy(
            "no healthy member to take a snapshot from: " + "; ".join(view.problems())
        )
    source = next((m for m in healthy if m.id == view.leader_id), healthy[0])
    endpoint = source.client_urls[0]
    keys_now, revision_now = client.count_keys(endpoint)
    final, fd = create_part(folder, inv.cluster.name, datetime.now(UTC))
    part = final.with_name(final.name + ".part")
    ctx.ui.info("backup", f"snapshot of {source.name} ({endpoint}) into {final}")
    try:
        with os.fdopen(fd, "wb") as out, ctx.ui.progress("[backup] snapshot", None) as bar:
            size = client.snapshot(endpoint, out, progress=lambda n: bar(n))
            out.flush()
            os.fsync(out.fileno())
        sha256 = verify_integrity(part)
        status = status_of_snapshot(ctx, part)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    final = publish(part, final)
    fsync_dir(folder)
    result = BackupResult(
        file=str(final),
        size=size,
        sha256=sha256,
        revision=status.revision if status else revision_now,
        keys=status.total_keys if status else keys_now,
        source=source.name,
        checked_by="integrity hash, etcd snapshot status" if status else "integrity hash",
    )
    ctx.ui.info(
        "backup",
        f"{final.name}: {size} bytes, revision {result.revision}, {result.keys} keys, "
        f"sha256 {sha256} (checked by {result.checked_by})",
    )
    if keep is not None:
        for old in prune_local(folder, inv.cluster.name, keep):
            ctx.ui.info("backup", f"pruned {old.name} (--keep {keep})")
    return result


def show_backup(ctx: RunContext, result: BackupResult, *, as_json: bool) -> None:
    if as_json:
        ctx.ui.print_json(asdict(result))
    else:
        ctx.ui.print(result.file)


# -- scheduled backups on the hosts ---------------------------------------------------------


def schedule_off_script(ctx: RunContext) -> str:
    script = shlex.quote(backup_script_path(ctx.inv))
    return "\n".join(
        [
            BACKUP_TIMER_OFF,
            f"rm -f {BACKUP_UNIT_PATH} {BACKUP_TIMER_PATH} {script}",
            DAEMON_RELOAD,
        ]
    )


def run_schedule(
    ctx: RunContext,
    *,
    every: str,
    keep: int,
    off: bool,
    dry_run: bool = False,
    as_json: bool = False,
) -> int:
    """Install (or with `off` remove) the backup timer on every host (see
    `core.planners.schedule`); a dry run prints the plan and touches no host."""
    record = ctx.inv.cluster.state_dir / SCHEDULE_FILE
    plan = plan_schedule(ctx.inv, every=every, keep=keep, off=off, record=str(record))
    if dry_run:
        return show_plan(ctx, plan, as_json=as_json)
    with locked_hosts(ctx, "backup schedule", [h.name for h in ctx.inv.hosts]):
        execute(ctx, plan, _schedule_handlers(ctx, every, keep))
    return EXIT_OK


def _schedule_handlers(ctx: RunContext, every: str, keep: int) -> dict[str, Handler]:
    def schedule(step: Step, _run: Execution) -> None:
        assert step.host is not None
        conn = ctx.conn(step.host)
        if "files" not in step.args:
            conn.run(schedule_off_script(ctx))
            ctx.ui.info(f"schedule {conn.name}", "backup timer removed")
            return
        conn.run(f"install -d -m 0700 -o root -g root {shlex.quote(HOST_BACKUP_DIR)}")
        apply_files(conn, step.args["files"])
        conn.run(BACKUP_TIMER_ON)
        ctx.ui.info(
            f"schedule {conn.name}",
            f"snapshot every {every} into {HOST_BACKUP_DIR}, keeping the last {keep}",
        )

    def record(step: Step, _run: Execution) -> None:
        path = ctx.inv.cluster.state_dir / SCHEDULE_FILE
        if step.args["off"]:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, step.args["data"], 0o600)

    return {"schedule": schedule, "record": record}


def schedule_installed(ctx: RunContext) -> bool:
    return (ctx.inv.cluster.state_dir / SCHEDULE_FILE).exists()


@dataclass
class HostBackup:
    where: str  # "local" or a host name
    name: str
    size: int
    taken_at: datetime


def host_backups(ctx: RunContext) -> tuple[list[HostBackup], list[str]]:
    """Backups on every reachable host (newest first) and the hosts that could not be read."""
    pattern = shlex.quote(HOST_BACKUP_DIR) + f"/{ctx.inv.cluster.name}-*.db"

    def one(conn: HostConnection) -> list[HostBackup]:
        out = conn.run(
            f'for f in {pattern}; do [ -f "$f" ] && stat -c \'%s %Y %n\' "$f"; done; true',
            quiet=True,
        ).stdout
        found = []
        for line in out.splitlines():
            size, mtime, path = line.split(maxsplit=2)
            found.append(
                HostBackup(conn.name, path, int(size), datetime.fromtimestamp(int(mtime), UTC))
            )
        return found

    results = ctx.pool.map(one, [h.name for h in ctx.inv.hosts])
    backups = [b for r in results.values() if r.value for b in r.value]
    failed = [f"{n} ({r.error})" for n, r in results.items() if r.error]
    return sorted(backups, key=lambda b: b.taken_at, reverse=True), failed


def run_list(ctx: RunContext, *, out_dir: Path | None, as_json: bool) -> None:
    folder = out_dir or default_backup_dir(ctx)
    rows = [
        HostBackup("local", str(b.path), b.size, b.taken_at)
        for b in list_local(folder, ctx.inv.cluster.name)
    ]
    on_hosts, failed = host_backups(ctx)
    rows = sorted(rows + on_hosts, key=lambda b: b.taken_at, reverse=True)
    if as_json:
        ctx.ui.print_json(
            {
                "backups": [asdict(b) | {"taken_at": b.taken_at.isoformat()} for b in rows],
                "unreachable": failed,
            }
        )
        return
    ctx.ui.table(
        f"backups of cluster {ctx.inv.cluster.name}, newest first",
        ["WHERE", "FILE", "SIZE", "TAKEN (UTC)"],
        [[b.where, b.name, str(b.size), b.taken_at.strftime("%Y-%m-%d %H:%M:%S")] for b in rows],
    )
    for host in failed:
        ctx.ui.warn("backup", f"could not list backups on {host}")
