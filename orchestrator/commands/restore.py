"""`restore SNAPSHOT --yes` and `up --from-snapshot`: a new cluster from one snapshot file.

Observe: the file, checked on this machine before any host is read (etcd's trailing hash,
then etcd's own `snapshot status` when this machine can run the release) -> [facts] of
every host with what proves whose it is (and the run locks; without --yes, or with
--dry-run, read without them). Plan (`core.planners.restore`): refused when a host may hold
another cluster (or, for --from-snapshot, any etcd data). Execute: [verify] -> [certs] ->
[release] -> [install HOST] -> [check] -> [restore HOST] (the file sent, checked on the
host and restored next to the data dir: on every host before any member stops) -> [stop
HOST] -> [aside HOST] (old data dir moved aside, never deleted) -> [start] all members ->
[healthy], then [done] with key count and revision.
"""

from __future__ import annotations

import secrets
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.adapters.release import Release
from orchestrator.adapters.snapshot import verify_integrity
from orchestrator.commands.backup import status_of_snapshot
from orchestrator.core.errors import EXIT_OK, SafetyRefusal, UsageError
from orchestrator.core.etcd_unit import STOP_IF_RUNNING
from orchestrator.core.facts import HostFacts
from orchestrator.core.host_lock import LockOwner
from orchestrator.core.host_paths import restore_upload_path
from orchestrator.core.host_plan import HostPlan, desired_files, plan_host
from orchestrator.core.inventory import Host, Inventory
from orchestrator.core.member_env import member_env
from orchestrator.core.ownership import RESTORE_PREFIX, Marker
from orchestrator.core.plan import Plan, Step
from orchestrator.core.planners.restore import (
    RestoreObserved,
    SnapshotCheck,
    plan_restore,
    stage_dir,
)
from orchestrator.core.versions import Version
from orchestrator.engine.cluster import wait_healthy
from orchestrator.engine.context import RunContext
from orchestrator.engine.executor import Execution, Handler, execute, show_plan
from orchestrator.engine.hosts import gather_facts, raise_for_failures, release_locks
from orchestrator.engine.identity import lock_and_read, observe_identity, read_unlocked
from orchestrator.engine.operations import aside_lines, marker_lines
from orchestrator.engine.phases import (
    START_TIMEOUT,
    fetch_one_release,
    install_host,
    issue_certs,
    start_new_cluster,
)

q = shlex.quote
RESTORE_TIMEOUT = 3600.0  # the upload of a large snapshot, then etcd's own restore


def restore_command(
    inv: Inventory,
    host: Host,
    snapshot: str,
    token: str,
    bump_revision: int | None,
    mark_compacted: bool,
    data_dir: str | None = None,
) -> str:
    """etcd's own restore for one member (etcdutl from 3.5, etcdctl on 3.4)."""
    c = inv.cluster
    tool = (
        f"{q(c.install_dir)}/etcdutl"
        if c.etcd_version >= Version(3, 5, 0)
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


def stage_script(
    inv: Inventory,
    host: Host,
    token: str,
    sha256: str,
    bump_revision: int | None,
    mark_compacted: bool,
    *,
    mount_point: bool,
) -> str:
    """Receive the snapshot on stdin, check that it arrived whole (its sha256), and restore
    the member from it with etcd's own restore (which checks the snapshot's hash) into a
    folder next to the data dir, on its file system (inside it when it is a mount point).
    Nothing is stopped, moved or owned here."""
    data = q(inv.cluster.data_dir)
    snap = restore_upload_path(token)
    stage = stage_dir(inv.cluster.data_dir, token, mount_point=mount_point)
    return "\n".join(
        [
            "set -e",
            "umask 077",
            f"trap 'rm -f {snap}' EXIT",
            f"cat > {snap}",
            f"printf '%s  %s\\n' {sha256} {snap} | sha256sum -c --quiet --strict -",
            # What restores cut short left: ours, by their names.
            f"rm -rf {data}{RESTORE_PREFIX}* {data}/{RESTORE_PREFIX}*",
            restore_command(inv, host, snap, token, bump_revision, mark_compacted, stage),
        ]
    )


def swap_script(
    inv: Inventory, token: str, stamp: str, marker: Marker, *, mount_point: bool
) -> str:
    """Once etcd is stopped (again, to be sure) and the restored member is there: move the
    old data aside (never deleted; a mount point keeps its place), put the restored member
    in, mark and own it. Prints where the old data went."""
    c = inv.cluster
    data = q(c.data_dir)
    stage = q(stage_dir(c.data_dir, token, mount_point=mount_point))
    return "\n".join(
        [
            "set -e",
            "umask 077",
            "trap '' PIPE",  # a connection lost from here on must not kill it half-way
            f"test -d {stage}/member || {{ echo 'no restored member in '{stage} >&2; exit 1; }}",
            STOP_IF_RUNNING,
            "aside=$(",
            *aside_lines(c.data_dir, f"before-restore-{stamp}"),
            ")",
            f"if [ -d {data} ]; then mv -T {stage}/member {data}/member; rm -rf {stage}; "
            f"else mv -T {stage} {data}; fi",
            f"chown -R etcd:etcd {data}/member",  # not what was moved aside inside it
            f"chown etcd:etcd {data}",
            f"chmod 0700 {data}",
            *marker_lines(c.data_dir, marker),
            'echo "$aside"',
        ]
    )


def _check_restore_flags(ctx: RunContext, name: str) -> None:
    """Older etcdutl lacks --bump-revision/--mark-compacted: find out before anything stops."""
    tool = restore_command(ctx.inv, ctx.inv.host(name), "x", "x", None, False).split(" snapshot ")[
        0
    ]
    help_text = ctx.conn(name).run(f"{tool} snapshot restore --help 2>&1", check=False).stdout
    if "--bump-revision" not in help_text or "--mark-compacted" not in help_text:
        raise SafetyRefusal(
            f"etcd {ctx.inv.cluster.etcd_version}'s restore tool has no --bump-revision/"
            "--mark-compacted; restore without them, or with a newer etcd_version; "
            "nothing was stopped"
        )


def check_snapshot(ctx: RunContext, snapshot: Path) -> SnapshotCheck:
    """The file, checked on this machine before any host is read (raises when it is not a
    whole snapshot)."""
    if snapshot.is_dir():
        raise UsageError(f"{snapshot}: is a folder, not a snapshot file; nothing was changed")
    if not snapshot.is_file():
        raise UsageError(f"{snapshot}: no such snapshot file; nothing was changed")
    sha256 = verify_integrity(snapshot)
    status = status_of_snapshot(ctx, snapshot)
    return SnapshotCheck(
        str(snapshot),
        snapshot.name,
        sha256,
        status.revision if status else None,
        status.total_keys if status else None,
    )


def run_restore(
    ctx: RunContext,
    snapshot: Path,
    *,
    yes: bool,
    bump_revision: int | None = None,
    mark_compacted: bool = False,
    fresh_only: bool = False,
    dry_run: bool = False,
    as_json: bool = False,
) -> int:
    """Restore every inventory host from `snapshot`. `fresh_only` is `up --from-snapshot`:
    refused when any host holds data or runs etcd. Without `yes` (and not `fresh_only`), or
    with `dry_run`: print the plan (hosts read without locks) and return its exit code."""
    inv = ctx.inv
    checked = check_snapshot(ctx, snapshot)
    names = [h.name for h in inv.hosts]
    token = f"{inv.cluster.name}-{secrets.token_hex(6)}"
    stamp = time.strftime("%Y%m%d%H%M%S")

    def plan_for(facts: dict[str, HostFacts]) -> Plan:
        obs = RestoreObserved(checked, observe_identity(ctx, facts), token, stamp)
        return plan_restore(
            inv,
            obs,
            fresh_only=fresh_only,
            bump_revision=bump_revision,
            mark_compacted=mark_compacted,
        )

    if dry_run or not (yes or fresh_only):
        code = show_plan(ctx, plan_for(read_unlocked(ctx, names)), as_json=as_json)
        if not dry_run:
            ctx.ui.info("restore", "nothing was changed; add --yes to do it")
        return code
    owner, facts = lock_and_read(ctx, "restore", names)
    try:
        run = _Restore(ctx, snapshot, owner, facts)
        execute(ctx, plan_for(facts), run.handlers())
    finally:
        release_locks(ctx, owner, names)
    keys, revision = ctx.client().count_keys(inv.client_url(inv.hosts[0]))
    ctx.ui.info(
        "done",
        f"cluster {inv.cluster.name} restored from {snapshot.name}: {len(names)} members "
        f"healthy, {keys} keys, revision {revision}",
    )
    return EXIT_OK


@dataclass
class _Restore:
    """The handlers of one restore, and what they hand on: the hosts' facts (read again
    with their files' hashes once the certs are there), each host's install plan, the
    releases fetched, the snapshot's bytes (read once)."""

    ctx: RunContext
    snapshot: Path
    owner: LockOwner
    facts: dict[str, HostFacts]
    plans: dict[str, HostPlan] = field(default_factory=dict)
    releases: dict[str, Release] = field(default_factory=dict)
    data: bytes | None = None
    mutex: threading.Lock = field(default_factory=threading.Lock)

    def handlers(self) -> dict[str, Handler]:
        return {
            "verify": lambda step, _run: self.ctx.ui.info("verify", step.action),
            "certs": self.certs,
            "release": self.release,
            "install": self.install,
            "check": lambda step, _run: _check_restore_flags(self.ctx, str(step.host)),
            "stage": self.stage,
            "stop": lambda step, _run: self.ctx.conn(str(step.host)).run(STOP_IF_RUNNING),
            "aside": self.aside,
            "start": self.start,
            "healthy": lambda _step, _run: wait_healthy(self.ctx.client(), timeout=START_TIMEOUT),
        }

    def certs(self, step: Step, _run: Execution) -> None:
        """Certs (and a CA when there is none), every host's files for a static new
        cluster, the facts again with those files' hashes, and what each host needs."""
        ctx, inv = self.ctx, self.ctx.inv
        issued = issue_certs(ctx)
        ca_pem, marker = ctx.pki.trust_pem(), ctx.marker()
        paths = {}
        for host in inv.hosts:
            env = member_env(inv, host, token=step.args["token"], state="new", static=True)
            certs = {k: (c.cert_pem, c.key_pem) for k, c in issued[host.name].items()}
            paths[host.name] = desired_files(
                inv, host, env=env, ca_pem=ca_pem, certs=certs, marker=marker
            )
        self.facts = gather_facts(ctx, self.owner, paths, list(paths))
        self.plans = {
            name: plan_host(
                inv,
                inv.host(name),
                files,
                self.facts[name],
                version=inv.cluster.etcd_version,
                member=False,
                bootstrap=True,
            )
            for name, files in paths.items()
        }

    def release(self, step: Step, _run: Execution) -> None:
        arch = step.args["arch"]
        if any(p.install and self.facts[n].arch == arch for n, p in self.plans.items()):
            self.releases[arch] = fetch_one_release(self.ctx, arch)

    def install(self, step: Step, _run: Execution) -> None:
        name = str(step.host)
        plan = self.plans[name]
        if plan.changes:
            release = self.releases[self.facts[name].arch] if plan.install else None
            install_host(self.ctx, self.ctx.conn(name), plan, release)

    def _bytes(self) -> bytes:
        with self.mutex:
            if self.data is None:
                self.data = self.snapshot.read_bytes()
            return self.data

    def stage(self, step: Step, _run: Execution) -> None:
        name, a = str(step.host), step.args
        script = stage_script(
            self.ctx.inv,
            self.ctx.inv.host(name),
            a["token"],
            a["sha256"],
            a["bump_revision"],
            a["mark_compacted"],
            mount_point=a["mount_point"],
        )
        self.ctx.conn(name).run(script, stdin=self._bytes(), timeout=RESTORE_TIMEOUT)

    def aside(self, step: Step, _run: Execution) -> None:
        name, a = str(step.host), step.args
        script = swap_script(
            self.ctx.inv, a["token"], a["stamp"], self.ctx.marker(), mount_point=a["mount_point"]
        )
        said = self.ctx.conn(name).run(script, timeout=RESTORE_TIMEOUT).stdout.split()
        moved = said[-1] if said else "none"
        self.ctx.ui.info(f"restore {name}", f"member restored (old data, if any: {moved})")

    def start(self, _step: Step, _run: Execution) -> None:
        self.data = None  # every host has it
        inv = self.ctx.inv
        raise_for_failures(self.ctx, "start", start_new_cluster(self.ctx, list(inv.hosts)))
