"""`up` and `plan`: converge the hosts to the inventory, bootstrapping the cluster if needed.

Observe ([facts] of every host, with the run locks; [certs]; [discover] the running
cluster), plan (`core.planners.up`: every decision and refusal), then execute the plan or,
for `plan`/`--dry-run`, print it. Steps: [release] -> aside (--force) -> [install HOST] (the
founder first, the others in the background) -> [start HOST] -> [remove HOST] (stale, with
--force) -> [bootstrap] -> [join HOST] one at a time -> [enable HOST] -> [restart HOST]
rolling, leader last -> [done].
"""

from __future__ import annotations

import secrets
import shlex
import time
from dataclasses import replace

from orchestrator.adapters.etcd_api import EtcdApiError
from orchestrator.adapters.lock import new_owner
from orchestrator.adapters.release import Release, arch_for
from orchestrator.core.cluster_view import ClusterView
from orchestrator.core.errors import (
    EXIT_OK,
    ClusterUnhealthy,
    PhaseFailure,
    SafetyRefusal,
    detail_of,
)
from orchestrator.core.etcd_unit import DISABLE_NOW, ENABLE, START_NOW, STOP_IF_RUNNING
from orchestrator.core.facts import HostFacts
from orchestrator.core.host_paths import env_path
from orchestrator.core.host_plan import HostPlan, desired_files, env_file
from orchestrator.core.inventory import Host
from orchestrator.core.member_env import member_env
from orchestrator.core.plan import Plan, Step
from orchestrator.core.planners.up import UpObserved, plan_up, token_from
from orchestrator.core.quorum import check_add, check_remove
from orchestrator.core.render import pki_paths
from orchestrator.engine.cluster import observe, wait_healthy
from orchestrator.engine.context import RunContext
from orchestrator.engine.executor import Execution, Handler, execute, show_plan
from orchestrator.engine.hosts import gather_facts, raise_for_failures, release_locks
from orchestrator.engine.membership import add_learner, promote, remove
from orchestrator.engine.operations import apply_files, aside_lines, marker_lines
from orchestrator.engine.phases import (
    START_TIMEOUT,
    ca_trust_of,
    fetch_one_release,
    install_host,
    issue_certs,
    start_and_wait,
    start_new_cluster,
)


def run_up(
    ctx: RunContext,
    *,
    dry_run: bool = False,
    force: bool = False,
    only: str | None = None,
    as_json: bool = False,
    before: Plan | None = None,
) -> int:
    """Converge every host, or with `only` just that one (`add-node`: no other host changes).
    With `dry_run`, print the plan instead (exit 10 when it changes something), after the
    steps of `before` (replace-node's removal)."""
    inv = ctx.inv
    started = time.monotonic()
    for warning in inv.warnings:
        ctx.ui.warn("preflight", warning)
    ctx.pool  # noqa: B018 - reads known_hosts and ssh_config now: a broken one changes nothing
    owner = new_owner("plan" if dry_run else "up")
    ctx.lock_state(owner)  # before the CA and certs: a concurrent run would make its own
    ca_created = not ctx.pki.ca_cert_path.exists()
    certs = issue_certs(ctx)
    pems = {n: {k: (c.cert_pem, c.key_pem) for k, c in kinds.items()} for n, kinds in certs.items()}
    wanted = {
        h.name: desired_files(
            inv, h, env="", ca_pem=ctx.pki.trust_pem(), certs=pems[h.name], marker=ctx.marker()
        )
        for h in inv.hosts
    }  # what the facts read: each file's state, the text of those that are not secret
    facts = gather_facts(ctx, owner, wanted, [h.name for h in inv.hosts])
    try:
        obs = UpObserved(
            facts=facts,
            view=_discover(ctx, facts),
            token=token_from(facts, env_path(inv)) or f"{inv.cluster.name}-{secrets.token_hex(6)}",
            trust=ca_trust_of(ctx, facts),
            ca_pem=ctx.pki.trust_pem(),
            certs=pems,
            marker=ctx.marker(),
            ca_created=ca_created,
            pki_dir=str(ctx.pki.ca_cert_path.parent),
        )
        plan = plan_up(inv, obs, force=force, only=only)
        if dry_run:
            return show_plan(ctx, plan if before is None else before.then(plan), as_json=as_json)
        for warning in plan.warnings:
            ctx.ui.warn("discover", warning)
        execute(ctx, plan, _handlers(ctx, obs, plan))
        for noop in plan.noops:
            ctx.ui.info(f"up {noop.host}", "no changes: " + noop.reason)
        ctx.ui.info(
            "done", f"cluster {inv.cluster.name} converged in {time.monotonic() - started:.1f} s"
        )
        _print_apiserver_flags(ctx)
        return EXIT_OK
    finally:
        release_locks(ctx, owner, facts)


def _handlers(ctx: RunContext, obs: UpObserved, plan: Plan) -> dict[str, Handler]:
    """What each step of `plan_up` does on the hosts."""
    releases: dict[str, Release] = {}
    joining = _joining_ids(ctx, obs, plan)

    def release(step: Step, _run: Execution) -> None:
        arch = arch_for(step.args["arch"])
        releases[arch] = fetch_one_release(ctx, step.args["arch"])

    def install(step: Step, _run: Execution) -> None:
        host_plan: HostPlan = step.args["plan"]
        arch = arch_for(obs.facts[host_plan.host].arch)
        install_host(ctx, ctx.conn(host_plan.host), host_plan, releases.get(arch))

    def start(step: Step, _run: Execution) -> None:
        ctx.conn(str(step.host)).run(START_NOW)
        ctx.ui.info(step.label, "starting etcd (member with data)")

    def healthy(_step: Step, _run: Execution) -> None:
        wait_healthy(ctx.client(), timeout=START_TIMEOUT, ignore=joining)

    def remove_stale(step: Step, _run: Execution) -> None:
        view = wait_healthy(ctx.client(), timeout=60, ignore=joining)
        verdict = check_remove(len(view.voters), view.healthy_voters, False, True)
        if not verdict.allowed:
            raise SafetyRefusal(f"[{step.label}] {verdict.rule}: {verdict.detail}")
        member = step.args["member"]
        remove(ctx.client(), member.id)
        ctx.ui.info(step.label, f"removed stale member {member.id:x} (--force)")

    def bootstrap(step: Step, run: Execution) -> None:
        _bootstrap(ctx, [ctx.inv.host(n) for n in step.args["founders"]], run)

    def join(step: Step, _run: Execution) -> None:
        _join(ctx, ctx.inv.host(str(step.host)), obs)

    def enable(step: Step, _run: Execution) -> None:
        ctx.conn(str(step.host)).run(ENABLE)

    def restart(step: Step, _run: Execution) -> None:
        _restart(ctx, obs, step)

    return {
        "release": release,
        "config-aside": lambda step, _run: _move_config_aside(ctx, ctx.inv.host(str(step.host))),
        "data-aside": lambda step, _run: _move_data_aside(
            ctx, ctx.inv.host(str(step.host)), step.label
        ),
        "install": install,
        "start": start,
        "healthy": healthy,
        "remove-stale": remove_stale,
        "bootstrap": bootstrap,
        "join": join,
        "enable": enable,
        "restart": restart,
    }


def _joining_ids(ctx: RunContext, obs: UpObserved, plan: Plan) -> set[int]:
    """Members the health gates overlook: learners whose join the plan completes."""
    ids = set()
    for step in plan.steps:
        if step.phase == "join" and step.host:
            member = obs.member_of(ctx.inv, ctx.inv.host(step.host))
            if member is not None:
                ids.add(member.id)
    return ids


def _restart(ctx: RunContext, obs: UpObserved, step: Step) -> None:
    """A member whose unit or env changed: the new files, then a restart (the rolling engine
    calls this one member at a time, leader last). One that fails to start gets its old
    files back and the run stops with its journal lines."""
    host = ctx.inv.host(str(step.host))
    host_plan: HostPlan = step.args["plan"]
    conn = ctx.conn(host)
    changes = host_plan.deferred
    apply_files(conn, [c.file for c in changes])
    try:
        start_and_wait(ctx, host, step.label, restart=True)
    except PhaseFailure as exc:
        texts = obs.facts[host.name].texts
        old = [
            replace(c.file, content=texts[c.file.path].encode())
            for c in changes
            if c.file.path in texts
        ]
        apply_files(conn, old)
        try:
            start_and_wait(ctx, host, step.label, restart=True)
            outcome = "its previous unit and env were put back and it runs again"
        except PhaseFailure:
            outcome = "putting its previous unit and env back did not bring it up either"
        raise PhaseFailure(step.label, None, f"{detail_of(exc)}\n{host.name}: {outcome}") from None


def _discover(ctx: RunContext, facts: dict[str, HostFacts]) -> ClusterView | None:
    running = [ctx.inv.client_url(h) for h in ctx.inv.hosts if facts[h.name].running]
    if not running:
        return None
    try:
        return observe(ctx.client(), running)
    except EtcdApiError as exc:
        ctx.ui.warn(
            "discover", f"etcd runs on {len(running)} host(s) but no member answers: {exc.reason}"
        )
        return None


def _bootstrap(ctx: RunContext, founders: list[Host], run: Execution) -> None:
    """Start a brand-new cluster: one member (learner mode) or all founders at once. In a
    parallel bootstrap the cluster forms when a quorum of founders started; the others are
    reported, and a re-run starts them."""
    inv = ctx.inv
    names = ", ".join(h.name for h in founders)
    ctx.ui.info("bootstrap", f"starting a new cluster {inv.cluster.name!r} on {names}")
    if len(founders) == 1:
        run.ready(founders[0].name)
        start_and_wait(ctx, founders[0], f"bootstrap {founders[0].name}")
        ctx.ui.info("bootstrap", "1-member cluster healthy")
        return
    # Each founder waits for its own install only: a quorum of them forms the cluster.
    results = start_new_cluster(ctx, founders, run.host_ready)
    started = [h for h in founders if results[h.name].ok]
    if len(started) <= len(founders) // 2:
        raise_for_failures(ctx, "bootstrap", results)
    view = wait_healthy(
        ctx.client(),
        timeout=START_TIMEOUT,
        endpoints=[inv.client_url(h) for h in started],
        ignore_unstarted=len(started) < len(founders),
    )
    missing = [h.name for h in founders if h not in started]
    without = f" without {', '.join(missing)}" if missing else ""
    ctx.ui.info("bootstrap", f"{len(view.voters)}-member cluster healthy{without}")
    raise_for_failures(ctx, "bootstrap", results)


def _join(ctx: RunContext, host: Host, obs: UpObserved) -> None:
    """Learner add -> env with state existing -> start -> promote once in sync -> healthy."""
    phase = f"join {host.name}"
    client = ctx.client()
    peer_url = ctx.inv.peer_url(host)
    before = next((m for m in client.members() if peer_url in m.peer_urls), None)
    # A join cut short (added, never started or promoted) is completed, not added again.
    view = wait_healthy(client, timeout=60, ignore={before.id} if before else ())
    pending = [m for m in view.learners if peer_url not in m.peer_urls]
    existing = view.by_peer_url(peer_url)
    verdict = check_add(len(view.voters), view.healthy_voters, len(pending))
    if not verdict.allowed and existing is None:
        raise SafetyRefusal(f"[{phase}] {verdict.rule}: {verdict.detail}")
    if existing is not None:
        ctx.ui.info(
            phase,
            f"member {existing.id:x} was added earlier but never completed its join; completing it",
        )
        member = existing
    else:
        member = add_learner(client, peer_url)
        ctx.ui.info(phase, f"added as learner {member.id:x}")
    members = client.members()
    env = member_env(ctx.inv, host, token=obs.token, state="existing", members=members)
    apply_files(ctx.conn(host), [env_file(ctx.inv, env)])
    # A learner started by an earlier, cut-short run restarts onto the files just written.
    start_and_wait(ctx, host, phase, restart=obs.facts[host.name].running)
    if member.is_learner:
        try:
            promote(client, member.id)
        except ClusterUnhealthy as exc:
            # A learner that cannot catch up is removed (safe: learners do not vote), so
            # the cluster is not left with a member that blocks the next change.
            remove(client, member.id)
            ctx.conn(host).run(DISABLE_NOW, check=False)
            raise PhaseFailure(
                phase,
                None,
                f"{exc}; the learner was removed and etcd stopped on {host.name}; "
                "re-run to try again",
            ) from None
        ctx.ui.info(phase, "promoted to voting member")
    wait_healthy(client, timeout=60)
    ctx.ui.info(phase, "cluster healthy")


def _move_data_aside(ctx: RunContext, host: Host, phase: str) -> None:
    """Stop etcd and move the data dir aside (never deleted; a mount point keeps its place
    and has its entries moved); an empty one, with our marker, takes its place, the etcd
    user's when there is one (a host of another tool may have none yet)."""
    data = shlex.quote(ctx.inv.cluster.data_dir)
    script = "\n".join(
        [
            "set -e",
            STOP_IF_RUNNING,
            *aside_lines(ctx.inv.cluster.data_dir, f"etcd-deploy-{time.strftime('%Y%m%d%H%M%S')}"),
            f"install -d -m 0700 {data}",
            *marker_lines(ctx.inv.cluster.data_dir, ctx.marker()),
            f"! id etcd >/dev/null 2>&1 || chown etcd:etcd {data}",
        ]
    )
    aside = ctx.conn(host).run(script).stdout.strip()
    ctx.ui.warn(phase, f"moved the old data dir aside to {aside} (--force)")


def _move_config_aside(ctx: RunContext, host: Host) -> None:
    """Rename another etcd-deploy cluster's config dir (--force; never deleted): the install
    makes a new one."""
    config = ctx.inv.cluster.config_dir
    script = "\n".join(
        ["set -e", *aside_lines(config, f"etcd-deploy-{time.strftime('%Y%m%d%H%M%S')}")]
    )
    aside = ctx.conn(host).run(script).stdout.strip()
    ctx.ui.warn(f"up {host.name}", f"moved the old config dir aside to {aside} (--force)")


def _print_apiserver_flags(ctx: RunContext) -> None:
    paths = pki_paths(ctx.inv)
    ctx.ui.print(
        "kube-apiserver flags for this cluster (copy the apiserver-etcd-client cert and "
        f"key from {ctx.pki.host_dir(ctx.inv.hosts[0].name)}):"
    )
    ctx.ui.print(f"  --etcd-servers={','.join(ctx.inv.client_urls())}")
    ctx.ui.print(f"  --etcd-cafile={paths['ca.crt']}")
    ctx.ui.print(f"  --etcd-certfile={paths['apiserver-etcd-client.crt']}")
    ctx.ui.print(f"  --etcd-keyfile={paths['apiserver-etcd-client.key']}")
