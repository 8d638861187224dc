"""`upgrade VERSION`: check the target, observe the cluster, plan (`core.planners.upgrade`:
the version path, then fetch the release, a backup first, each member through the rolling
engine, the inventory last), then print the plan (a dry run, or no --yes) or run it through
the executor. A member that does not come back gets its old binaries and env again and the
run stops with its journal.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from orchestrator.adapters.inventory_file import set_cluster_key_in_file
from orchestrator.adapters.release import Release, arch_for, fetch_release
from orchestrator.commands.backup import run_backup
from orchestrator.core import v2store
from orchestrator.core.errors import EXIT_OK, PhaseFailure, SafetyRefusal, detail_of
from orchestrator.core.facts import HostFacts
from orchestrator.core.host_paths import env_path
from orchestrator.core.host_plan import env_file
from orchestrator.core.member_env import member_env
from orchestrator.core.plan import Plan, Step
from orchestrator.core.planners.rolling import NOT_A_MEMBER
from orchestrator.core.planners.upgrade import plan_target, plan_upgrade, summary
from orchestrator.core.render import env_values
from orchestrator.core.versions import Version, parse_version
from orchestrator.engine.cluster import observe
from orchestrator.engine.context import RunContext
from orchestrator.engine.executor import Execution, Handler, execute, show_plan
from orchestrator.engine.hosts import locked_hosts
from orchestrator.engine.operations import apply_files, read_file, setup_host
from orchestrator.engine.phases import start_and_wait

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


@dataclass
class _Upgrade:
    """One real run's handlers and what they share: each host's facts (its architecture),
    the cluster token, the releases fetched."""

    facts: dict[str, HostFacts]
    token: str
    releases: dict[str, Release] = field(default_factory=dict)

    def handlers(self) -> dict[str, Handler]:
        return {
            "v2store": check_v2store,
            "release": self.release,
            "backup": backup,
            "upgrade": self.member,
            "inventory": set_version,
        }

    def release(self, step: Step, run: Execution) -> None:
        ctx, version = run.ctx, _target(step)
        for arch in sorted({arch_for(f.arch) for f in self.facts.values()}):
            self.releases[arch] = fetch_release(
                ctx.inv.cluster.release_url,
                version,
                arch,
                log=lambda m: ctx.ui.info("release", m),
                sha256=ctx.inv.cluster.release_pin(version, arch),
            )
            ctx.ui.info("release", f"etcd {version} linux-{arch} verified")

    def member(self, step: Step, run: Execution) -> None:
        """Push the release, swap the binaries (the old ones kept as `.prev`), render the
        flags of the new version, restart; a member that does not come up gets its old
        binaries and env back, runs again, and the run stops."""
        ctx, version = run.ctx, _target(step)
        inv = ctx.inv
        assert step.host is not None
        host = inv.host(step.host)
        phase = f"upgrade {host.name}"
        conn = ctx.conn(host)
        old_env = read_file(conn, env_path(inv))
        release = self.releases[arch_for(self.facts[host.name].arch)]
        new_env = member_env(  # rendered before the binaries change (plan_target checked it)
            inv,
            host,
            token=self.token,
            state="existing",
            members=ctx.client().members(),
            version=version,
        )
        setup_host(conn, inv, [], prepare=False, release=release)
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
                f"etcd {version} did not come up on {host.name}: {detail_of(exc)}\n"
                f"{host.name}: its previous binaries and env are back and it runs again",
            ) from None


def check_v2store(step: Step, run: Execution) -> None:
    """Refuse the upgrade when this member's v2 store holds more than membership."""
    ctx = run.ctx
    assert step.host is not None
    inv = ctx.inv
    result = ctx.conn(step.host).run(v2store.check_script(inv), check=False, timeout=600)
    problem = v2store.problem(step.host, result.exit_code, result.stdout, _target(step))
    if problem is not None:
        raise PhaseFailure(
            "v2store", None, f"{problem}; nothing was changed", SafetyRefusal.exit_code
        )
    ctx.ui.info(f"v2store {step.host}", "membership only: ready for 3.6")


def _target(step: Step) -> Version:
    """The step's target version: the plan carries `upgrade VERSION`'s text, checked by the
    planner already."""
    return parse_version(step.args["version"])


def backup(_step: Step, run: Execution) -> None:
    taken = run_backup(run.ctx, out_dir=None, keep=None)
    run.ctx.ui.info("upgrade", f"backup taken first: {taken.file}")


def set_version(step: Step, run: Execution) -> None:
    set_cluster_key_in_file(run.ctx.inv.path, "etcd_version", step.args["version"])


def run_upgrade(
    ctx: RunContext,
    target: str,
    *,
    yes: bool,
    allow_known_bad: bool,
    dry_run: bool,
    as_json: bool = False,
) -> int:
    inv = ctx.inv
    show = dry_run or not yes  # without --yes: the plan, as --dry-run prints it
    # Every local check before any call: the target, its release source, and the inventory
    # edit that ends the run.
    plan = plan_target(inv, target, allow_known_bad=allow_known_bad)
    if not plan.refusals:
        set_cluster_key_in_file(inv.path, "etcd_version", target, check_only=True)
        plan = plan_upgrade(inv, observe(ctx.client()), target, allow_known_bad=allow_known_bad)
    if show:
        code = show_plan(ctx, plan, as_json=as_json)
        if not dry_run and not as_json and plan.changes and not plan.refusals:
            ctx.ui.print("nothing was changed; add --yes to upgrade")
        return code
    _tell(ctx, plan)
    if all(s.handler == "inventory" for s in plan.steps):  # nothing to roll: no host lock
        execute(ctx, plan, {"inventory": set_version})
        if plan.steps:
            ctx.ui.info("inventory", f"etcd_version set to {target} in {inv.path}")
        return EXIT_OK
    with locked_hosts(ctx, "upgrade", [h.name for h in inv.hosts]) as facts:
        run = _Upgrade(facts, _token(ctx, inv.hosts[0].name))
        execute(ctx, plan, run.handlers())
    ctx.reload()
    versions = sorted({s.version for s in observe(ctx.client()).statuses.values()})
    ctx.ui.info(
        "done",
        f"every member runs etcd {', '.join(versions)}; etcd_version = {target} in {inv.path}",
    )
    return EXIT_OK


def _tell(ctx: RunContext, plan: Plan) -> None:
    """What a real run says before its first step (a dry run prints the plan instead)."""
    if plan.refusals:
        return  # the executor raises them
    for warning in plan.warnings:
        ctx.ui.warn("upgrade", warning)
    line = summary(plan)
    if line:
        ctx.ui.info("upgrade", line)
    for noop in plan.noops:
        if noop.reason == NOT_A_MEMBER:
            ctx.ui.warn(f"upgrade {noop.host}", f"{NOT_A_MEMBER}; skipped")
        else:
            ctx.ui.info("upgrade", noop.reason)


def _token(ctx: RunContext, name: str) -> str:
    env = env_values(read_file(ctx.conn(name), env_path(ctx.inv)))
    return env.get("ETCD_INITIAL_CLUSTER_TOKEN") or ctx.inv.cluster.name
