"""`upgrade VERSION`: check the version path, take a backup, then per member through the
rolling engine: push the verified release, swap the binaries (the old ones kept), render the
flags the new version understands, restart, wait healthy and caught up. A member that does
not come back gets its old binaries and env again and the run stops with its journal.
"""

from __future__ import annotations

import shlex

from orchestrator.adapters.etcd_api import Member
from orchestrator.adapters.release import Release, arch_for, fetch_release
from orchestrator.commands.backup import run_backup
from orchestrator.core.errors import ClusterUnhealthy, PhaseFailure, UsageError, detail_of
from orchestrator.core.host_plan import env_file
from orchestrator.core.inventory import Host, set_cluster_key_in_file
from orchestrator.core.render import env_values
from orchestrator.core.rules import needs_release_pin
from orchestrator.core.versions import check_upgrade_path
from orchestrator.engine.cluster import observe
from orchestrator.engine.context import RunContext
from orchestrator.engine.hosts import locked_hosts
from orchestrator.engine.operations import apply_files, read_file, setup_host
from orchestrator.engine.phases import Observed, member_env, start_and_wait
from orchestrator.engine.rolling import roll

q = shlex.quote


def rollback_script(install_dir: str) -> str:
    """Put the `.prev` binaries back; a binary the old release did not have is removed."""
    d = q(install_dir)
    return "\n".join(
        [
            "set -e",
            "for b in etcd etcdctl etcdutl; do",
            f'  if [ -f {d}/"$b".prev ]; then mv -f {d}/"$b".prev {d}/"$b";',
            f'  elif [ "$b" = etcdutl ]; then rm -f {d}/"$b"; fi',
            "done",
        ]
    )


def run_upgrade(
    ctx: RunContext, target: str, *, yes: bool, allow_known_bad: bool, dry_run: bool
) -> int:
    inv = ctx.inv
    # Every local check before any call: the target (the rules of the inventory's
    # etcd_version), its release source, and the inventory edit that ends the run.
    check_upgrade_path([], target, allow_known_bad)
    if needs_release_pin(inv.cluster.release_url) and not any(
        key.partition("/")[0] == target for key in inv.cluster.release_sha256
    ):
        raise UsageError(
            f"{inv.path}: cluster.release_url is plain http:// on another machine: pin the "
            f'sha256 of etcd {target}\'s tarballs in cluster.release_sha256 ("{target}/amd64" '
            '= "<sha256>") before upgrading'
        )
    set_cluster_key_in_file(inv.path, "etcd_version", target, check_only=True)
    client = ctx.client()
    view = observe(client)
    if not view.healthy:
        raise ClusterUnhealthy(
            "upgrade needs a healthy cluster first: " + "; ".join(view.problems())
        )
    current = [s.version for s in view.statuses.values()]
    path = check_upgrade_path(current, target, allow_known_bad)
    for warning in path.warnings:
        ctx.ui.warn("upgrade", warning)
    if path.kind == "none":
        ctx.ui.info("upgrade", f"every member already runs etcd {target}")
        if inv.cluster.etcd_version != target:
            set_cluster_key_in_file(inv.path, "etcd_version", target)
            ctx.ui.info("inventory", f"etcd_version set to {target} in {inv.path}")
        return 0
    ctx.ui.info("upgrade", f"{', '.join(sorted(set(current)))} -> {target}: {path.detail}")
    if dry_run or not yes:
        roll(
            ctx,
            list(inv.hosts),
            lambda h, m: None,
            phase="upgrade",
            describe=f"install etcd {target} and restart",
            dry_run=True,
        )
        if not yes and not dry_run:
            ctx.ui.print("nothing was changed; add --yes to upgrade")
        return 0
    names = [h.name for h in inv.hosts]
    with locked_hosts(ctx, "upgrade", names) as facts:
        releases: dict[str, Release] = {}
        for arch in sorted({arch_for(f.arch) for f in facts.values()}):
            releases[arch] = fetch_release(
                inv.cluster.release_url,
                target,
                arch,
                log=lambda m: ctx.ui.info("release", m),
                sha256=inv.cluster.release_pin(target, arch),
            )
            ctx.ui.info("release", f"etcd {target} linux-{arch} verified")
        backup = run_backup(ctx, out_dir=None, keep=None)
        ctx.ui.info("upgrade", f"backup taken first: {backup.file}")
        token = _token(ctx, names[0])
        obs = Observed(facts, view, token)

        def upgrade_member(host: Host, member: Member) -> None:
            phase = f"upgrade {host.name}"
            conn = ctx.conn(host)
            env_path = f"{inv.cluster.config_dir}/etcd.env"
            old_env = read_file(conn, env_path)
            setup_host(
                conn, inv, [], prepare=False, release=releases[arch_for(facts[host.name].arch)]
            )
            members = client.members()
            new_env = member_env(ctx, host, obs, state="existing", members=members, version=target)
            apply_files(conn, [env_file(inv, new_env)])
            try:
                start_and_wait(ctx, host, phase, restart=True)
            except PhaseFailure as exc:
                conn.run(rollback_script(inv.cluster.install_dir))
                apply_files(conn, [env_file(inv, old_env)])
                start_and_wait(ctx, host, phase, restart=True)
                raise PhaseFailure(
                    phase,
                    None,
                    f"etcd {target} did not come up on {host.name}: {detail_of(exc)}\n"
                    f"{host.name}: its previous binaries and env are back and it runs again",
                ) from None

        roll(
            ctx,
            list(inv.hosts),
            upgrade_member,
            phase="upgrade",
            describe=f"install etcd {target} and restart",
        )
    set_cluster_key_in_file(inv.path, "etcd_version", target)
    ctx.reload()
    versions = sorted({s.version for s in observe(ctx.client()).statuses.values()})
    ctx.ui.info(
        "done",
        f"every member runs etcd {', '.join(versions)}; etcd_version = {target} in {inv.path}",
    )
    return 0


def _token(ctx: RunContext, name: str) -> str:
    env_path = f"{ctx.inv.cluster.config_dir}/etcd.env"
    env = env_values(read_file(ctx.conn(name), env_path))
    return env.get("ETCD_INITIAL_CLUSTER_TOKEN") or ctx.inv.cluster.name
