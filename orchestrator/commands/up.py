"""`up` and `plan`: converge the hosts to the inventory, bootstrapping the cluster if needed.

Phases: [facts] (and the run lock) -> [certs] -> [release] -> [discover] -> [plan] ->
[install HOST] in parallel -> [bootstrap] -> [join HOST] one at a time -> [start HOST] ->
[restart HOST] rolling, leader last -> [done].
"""

from __future__ import annotations

import secrets
import shlex
import time
from dataclasses import replace

from orchestrator.adapters.etcd_api import EtcdApiError, Member
from orchestrator.adapters.lock import new_owner
from orchestrator.core.errors import (
    EXIT_CHANGES_PENDING,
    ClusterUnhealthy,
    PhaseFailure,
    SafetyRefusal,
    detail_of,
)
from orchestrator.core.facts import HostFacts
from orchestrator.core.host_plan import HostPlan, env_file, plan_host
from orchestrator.core.inventory import Host
from orchestrator.core.ownership import DirFacts, Ownership, env_is_ours, judge
from orchestrator.core.quorum import check_add, check_remove
from orchestrator.core.render import env_values, pki_paths
from orchestrator.engine.cluster import ClusterView, observe, wait_healthy
from orchestrator.engine.context import RunContext
from orchestrator.engine.hosts import gather_facts, raise_for_failures, release_locks
from orchestrator.engine.identity import CONFIG_RULE, DATA_RULE, OUR_ENV
from orchestrator.engine.membership import add_learner, promote, remove
from orchestrator.engine.operations import apply_files, aside_lines, marker_lines
from orchestrator.engine.phases import (
    ENABLE,
    START_NOW,
    START_TIMEOUT,
    Installs,
    Observed,
    check_ca,
    desired_for,
    fetch_releases,
    foreign_ca_hosts,
    install_hosts,
    issue_certs,
    member_env,
    start_and_wait,
    start_new_cluster,
)
from orchestrator.engine.rolling import roll


def _token_from(facts: dict[str, HostFacts], env_path: str) -> str | None:
    for f in facts.values():
        token = env_values(f.texts.get(env_path, "")).get("ETCD_INITIAL_CLUSTER_TOKEN")
        if token:
            return token
    return None


def _foreign_data(ctx: RunContext, obs: Observed, scope: list[str]) -> list[str]:
    """With no cluster answering: hosts whose data dir this inventory's cluster did not
    write: no etcd.env of ours names the host (another tool's or a hand-made etcd), or the
    host trusts another CA (another cluster's; `check_ca` has refused the case where every
    host does). `up` would start that data under our certs and join the others to it."""
    if obs.view is not None:
        return []  # `_safety` compares the hosts with the members of the running cluster
    env_path = f"{ctx.inv.cluster.config_dir}/etcd.env"
    other_ca = foreign_ca_hosts(ctx, obs.facts)
    return [
        name
        for name in scope
        if obs.facts[name].has_data
        and (
            name in other_ca
            or env_values(obs.facts[name].texts.get(env_path, "")).get("ETCD_NAME") != name
        )
    ]


def _unowned_folders(
    ctx: RunContext, obs: Observed, scope: list[str]
) -> tuple[dict[str, Ownership], dict[str, Ownership]]:
    """Folders `up` would re-own or write into that are neither ours nor empty: data dirs
    (a data dir holding etcd data is judged by `_safety` and `_foreign_data`) and config
    dirs, each host -> verdict."""
    c = ctx.inv.cluster
    marker = ctx.marker()
    data: dict[str, Ownership] = {}
    config: dict[str, Ownership] = {}
    for name in scope:
        f = obs.facts[name]
        verdict = judge(c.data_dir, f.folders.get(c.data_dir, DirFacts()), DATA_RULE, marker)
        if not f.has_data and not verdict.may_write:
            data[name] = verdict
        env = env_values(f.texts.get(f"{c.config_dir}/etcd.env", ""))
        proven = OUR_ENV if env_is_ours(c.name, name, env) else frozenset()
        config_dir = f.folders.get(c.config_dir, DirFacts())
        verdict = judge(c.config_dir, config_dir, CONFIG_RULE, marker, proven=proven)
        if not verdict.may_write:
            config[name] = verdict
    return data, config


def _refuse_unowned(
    data: dict[str, Ownership], config: dict[str, Ownership], *, force: bool
) -> tuple[list[str], list[str]]:
    """Refuse folders that are not ours. With --force, return the hosts whose data dir and
    whose config dir (another etcd-deploy cluster's: never another tool's) move aside; a
    symlinked folder is never followed, nor moved."""
    links = [f"{n}: {v.reason}" for f in (data, config) for n, v in f.items() if v.state == "link"]
    if links:
        raise SafetyRefusal(f"{'; '.join(links)}; nothing was changed")
    others = {n: v.reason for n, v in config.items() if v.state != "foreign"}
    if others:
        raise SafetyRefusal(
            f"{_per_host(others)}. etcd-deploy writes only into folders that are empty or "
            "carry its marker, and never takes over another tool's config dir: choose "
            "another cluster.config_dir, or empty that folder by hand; nothing was changed"
        )
    movable = {n: [v.reason] for n, v in data.items()}
    for name, verdict in config.items():
        movable.setdefault(name, []).append(verdict.reason)
    if movable and not force:
        raise SafetyRefusal(
            f"{_per_host({n: ', '.join(r) for n, r in movable.items()})}. etcd-deploy writes "
            "only into folders that are empty or carry its marker: to move them aside (never "
            "deleted) and use these folders: etcd-deploy up --force; nothing was changed"
        )
    return list(data), list(config)


def _per_host(reasons: dict[str, str]) -> str:
    return "; ".join(f"{name}: {reason}" for name, reason in reasons.items())


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


def _safety(
    ctx: RunContext, obs: Observed, scope: list[str], *, force: bool
) -> list[tuple[Host, Member]]:
    """Refuse data dirs of other clusters; return stale members (peer URL a member, etcd gone)."""
    stale: list[tuple[Host, Member]] = []
    if obs.view is None:
        return stale  # no running cluster: nothing to compare the hosts with
    for host in map(ctx.inv.host, scope):
        f = obs.facts[host.name]
        member = obs.member_of(ctx, host)
        if member is None and f.has_data and not force:
            raise SafetyRefusal(
                f"{host.name}: {ctx.inv.cluster.data_dir} holds data, but {host.name} is not a "
                "member of the running cluster (a removed member or another cluster); "
                "to move that data dir aside and join: etcd-deploy up --force"
            )
        if member is not None and member.started and not f.holds_cluster:
            if not force:
                raise SafetyRefusal(
                    f"{host.name}: its peer URL {ctx.inv.peer_url(host)} is still a member "
                    f"({member.id:x}) but etcd and its data are gone from the host; starting a "
                    "fresh member there would split the cluster. To remove the stale member and "
                    "join the host again: etcd-deploy up --force"
                )
            stale.append((host, member))
    return stale


def plan_all(ctx: RunContext, obs: Observed) -> dict[str, HostPlan]:
    plans = {}
    members = obs.view.members if obs.view else []
    for i, host in enumerate(ctx.inv.hosts):
        member = obs.member_of(ctx, host)
        f = obs.facts[host.name]
        # A member whose host lost etcd and its data is stale: it joins again (after removal).
        # A learner (a join cut short after its start) joins again too: `_join` promotes it.
        is_member = (
            member is not None and member.started and not member.is_learner and f.holds_cluster
        )
        fresh = obs.view is None and not any(x.has_data for x in obs.facts.values())
        bootstrap = fresh and (i == 0 or ctx.inv.cluster.bootstrap == "parallel")
        if obs.view is None and obs.facts[host.name].has_data:
            is_member = True  # a stopped cluster: its members start again
        env = member_env(ctx, host, obs, state="new" if bootstrap else "existing", members=members)
        plans[host.name] = plan_host(
            ctx.inv,
            host,
            desired_for(ctx, host, obs, env),
            obs.facts[host.name],
            version=ctx.inv.cluster.etcd_version,
            member=is_member,
            bootstrap=bootstrap,
        )
    return plans


def print_plan(ctx: RunContext, plans: dict[str, HostPlan]) -> None:
    for name, plan in plans.items():
        if not plan.changes:
            ctx.ui.print(f"{name}: no changes ({'; '.join(plan.noops)})")
            continue
        ctx.ui.print(f"{name}:")
        if plan.prepare:
            ctx.ui.print(f"  ~ prepare: {plan.prepare}")
        if plan.install:
            ctx.ui.print(f"  ~ install {plan.install}")
        for change in plan.files:
            ctx.ui.print(
                f"  ~ {change.file.path}: {change.reason}"
                + (" (secret, no diff)" if change.file.secret else "")
            )
            for line in change.diff.splitlines():
                ctx.ui.print(f"      {line}")
        for reason in plan.restart_reasons:
            ctx.ui.print(f"  ~ restart etcd ({reason})")
        if plan.enable:
            ctx.ui.print("  ~ enable etcd.service")
        if plan.membership:
            ctx.ui.print(f"  + membership: {plan.membership}")
        for noop in plan.noops:
            ctx.ui.print(f"  = {noop}")


def run_up(
    ctx: RunContext, *, dry_run: bool = False, force: bool = False, only: str | None = None
) -> int:
    """Converge every host, or with `only` just that one (`add-node`: no other host changes)."""
    inv = ctx.inv
    scope = [only] if only else [h.name for h in inv.hosts]
    ui = ctx.ui
    started = time.monotonic()
    for warning in inv.warnings:
        ui.warn("preflight", warning)
    ctx.pool  # noqa: B018 - reads known_hosts and ssh_config now: a broken one changes nothing
    owner = new_owner("plan" if dry_run else "up")
    ctx.lock_state(owner)  # before the CA and certs: a concurrent run would make its own
    ca_created = not ctx.pki.ca_cert_path.exists()
    certs = issue_certs(ctx)
    placeholder = Observed({}, None, "", certs)
    paths = {h.name: desired_for(ctx, h, placeholder, env="") for h in inv.hosts}
    facts = gather_facts(ctx, owner, paths, [h.name for h in inv.hosts])
    try:
        check_ca(ctx, facts, ca_created, data_checked=True)
        view = _discover(ctx, facts)
        token = _token_from(facts, f"{inv.cluster.config_dir}/etcd.env") or (
            f"{inv.cluster.name}-{secrets.token_hex(6)}"
        )
        obs = Observed(facts, view, token, certs)
        if only and view is None:
            raise SafetyRefusal(
                f"no running cluster to add {only} to: bootstrap it first with etcd-deploy up"
            )
        stale = _safety(ctx, obs, scope, force=force)
        foreign = _foreign_data(ctx, obs, scope)
        if foreign and not force:
            raise SafetyRefusal(
                f"{', '.join(foreign)}: {inv.cluster.data_dir} holds data that this inventory's "
                "cluster did not write (no etcd.env of ours names the host, or the host trusts "
                "another CA) and no member answers; to move that data dir aside and start "
                "there afresh: "
                "etcd-deploy up --force"
            )
        unowned, config_aside = _refuse_unowned(*_unowned_folders(ctx, obs, scope), force=force)
        foreign += [n for n in unowned if n not in foreign]
        for name in foreign:
            obs.facts[name].has_data = False  # planned as bare: its data is moved aside first
        for name in config_aside:
            obs.facts[name].forget(inv.cluster.config_dir)  # planned as bare: moved aside first
        _report_foreign_members(ctx, obs)
        plans = {n: p for n, p in plan_all(ctx, obs).items() if n in scope}
        _refuse_version_changes(ctx, obs, plans, dry_run=dry_run)
        if dry_run:
            for name in foreign:
                ui.print(f"{name}: ~ move {inv.cluster.data_dir} aside (--force)")
            for name in config_aside:
                ui.print(f"{name}: ~ move {inv.cluster.config_dir} aside (--force)")
            print_plan(ctx, plans)
            pending = any(p.changes for p in plans.values()) or bool(stale or foreign)
            return EXIT_CHANGES_PENDING if pending or config_aside else 0
        releases = fetch_releases(ctx, obs, plans)  # before the first change on a host
        for name in config_aside:
            _move_config_aside(ctx, inv.host(name))
        for name in foreign:
            _move_data_aside(ctx, inv.host(name), "up")
        # A learner-mode bootstrap waits for its one founder: that host installs first.
        founders = [n for n, p in plans.items() if p.membership == "bootstrap"]
        first = founders if len(founders) == 1 else ()
        with install_hosts(ctx, obs, plans, releases, first) as installs:
            _converge_membership(ctx, obs, plans, stale, installs, force=force)
        _rolling_restart(ctx, obs, plans)
        for plan in plans.values():
            if not plan.changes:
                ui.info(f"up {plan.host}", "no changes: " + "; ".join(plan.noops))
        ui.info(
            "done", f"cluster {inv.cluster.name} converged in {time.monotonic() - started:.1f} s"
        )
        _print_apiserver_flags(ctx)
        return 0
    finally:
        release_locks(ctx, owner, facts)


def _refuse_version_changes(
    ctx: RunContext, obs: Observed, plans: dict[str, HostPlan], *, dry_run: bool
) -> None:
    """`up` never swaps the binary under a running member: that is `upgrade`'s job."""
    upgrades = [n for n, p in plans.items() if p.install and obs.facts[n].running]
    if not upgrades:
        return
    version = ctx.inv.cluster.etcd_version
    installed = sorted({str(obs.facts[n].etcd_version) for n in upgrades})
    message = (
        f"etcd on {', '.join(upgrades)} runs {', '.join(installed)} and the inventory asks for "
        f"{version}: `up` never changes the version of running members; use etcd-deploy "
        f"upgrade {version} (it checks the version path, takes a backup and rolls back a "
        "member that fails)"
    )
    if not dry_run:
        raise SafetyRefusal(message + "; nothing was changed")
    ctx.ui.warn("plan", message)


def _report_foreign_members(ctx: RunContext, obs: Observed) -> None:
    if obs.view is None:
        return
    ours = {ctx.inv.peer_url(h) for h in ctx.inv.hosts}
    for member in obs.view.members:
        if not ours.intersection(member.peer_urls):
            ctx.ui.warn(
                "discover",
                f"member {member.name or member.id} ({', '.join(member.peer_urls)})"
                " is not in the inventory; left alone",
            )


def _bootstrap(ctx: RunContext, founders: list[Host], installs: Installs) -> None:
    """Start a brand-new cluster: one member (learner mode) or all founders at once. In a
    parallel bootstrap the cluster forms when a quorum of founders started; the others are
    reported, and a re-run starts them."""
    inv = ctx.inv
    names = ", ".join(h.name for h in founders)
    ctx.ui.info("bootstrap", f"starting a new cluster {inv.cluster.name!r} on {names}")
    if len(founders) == 1:
        installs.ready(founders[0].name)
        start_and_wait(ctx, founders[0], f"bootstrap {founders[0].name}")
        ctx.ui.info("bootstrap", "1-member cluster healthy")
        return
    # Each founder waits for its own install only: a quorum of them forms the cluster.
    results = start_new_cluster(ctx, founders, installs.host_ready)
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


def _join(ctx: RunContext, host: Host, obs: Observed) -> None:
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
    env = member_env(ctx, host, obs, state="existing", members=members)
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
            ctx.conn(host).run("systemctl disable --now etcd.service", check=False)
            raise PhaseFailure(
                phase,
                None,
                f"{exc}; the learner was removed and etcd stopped on {host.name}; "
                "re-run to try again",
            ) from None
        ctx.ui.info(phase, "promoted to voting member")
    wait_healthy(client, timeout=60)
    ctx.ui.info(phase, "cluster healthy")


def _converge_membership(
    ctx: RunContext,
    obs: Observed,
    plans: dict[str, HostPlan],
    stale: list[tuple[Host, Member]],
    installs: Installs,
    *,
    force: bool,
) -> None:
    hosts = {h.name: h for h in ctx.inv.hosts}
    joining = {
        m.id
        for n, p in plans.items()
        if p.membership == "join" and (m := obs.member_of(ctx, hosts[n])) is not None
    }
    starting = [hosts[n] for n, p in plans.items() if p.membership == "start"]
    if starting:
        for host in starting:  # a stopped member rejoins on its own; start them all, then gate
            installs.ready(host.name)
            ctx.conn(host).run(START_NOW)
            ctx.ui.info(f"start {host.name}", "starting etcd (member with data)")
        wait_healthy(ctx.client(), timeout=START_TIMEOUT, ignore=joining)
    for host, member in stale:
        view = wait_healthy(ctx.client(), timeout=60, ignore=joining)
        verdict = check_remove(len(view.voters), view.healthy_voters, False, force)
        if not verdict.allowed:
            raise SafetyRefusal(f"[remove {host.name}] {verdict.rule}: {verdict.detail}")
        remove(ctx.client(), member.id)
        ctx.ui.info(f"remove {host.name}", f"removed stale member {member.id:x} (--force)")
    founders = [hosts[n] for n, p in plans.items() if p.membership == "bootstrap"]
    if founders:
        _bootstrap(ctx, founders, installs)
    for host, _ in stale:
        if plans[host.name].membership != "join":
            plans[host.name].membership = "join"
    for name, plan in plans.items():
        if plan.membership == "join":
            installs.ready(name)
            # Data of no member (a removed member's, another cluster's), never a learner's.
            if obs.facts[name].has_data and force and obs.member_of(ctx, hosts[name]) is None:
                _move_data_aside(ctx, hosts[name], f"join {name}")
            _join(ctx, hosts[name], obs)


def _move_data_aside(ctx: RunContext, host: Host, phase: str) -> None:
    """Stop etcd and move the data dir aside (never deleted; a mount point keeps its place
    and has its entries moved); an empty one, with our marker, takes its place, the etcd
    user's when there is one (a host of another tool may have none yet)."""
    data = shlex.quote(ctx.inv.cluster.data_dir)
    script = "\n".join(
        [
            "set -e",
            "systemctl stop etcd.service 2>/dev/null || true",
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


def _rolling_restart(ctx: RunContext, obs: Observed, plans: dict[str, HostPlan]) -> None:
    """Members whose unit or env changed get the new files and a restart through the rolling
    engine (one at a time, leader last); a member that fails to start gets its old files
    back and the run stops with its journal lines."""
    for name, plan in plans.items():
        if plan.enable:
            ctx.conn(name).run(ENABLE)
    todo = [ctx.inv.host(n) for n, p in plans.items() if p.restart_reasons]
    if not todo:
        return

    def restart(host: Host, _member: Member) -> None:
        plan = plans[host.name]
        phase = f"restart {host.name}"
        conn = ctx.conn(host)
        changes = plan.deferred
        apply_files(conn, [c.file for c in changes])
        try:
            start_and_wait(ctx, host, phase, restart=True)
        except PhaseFailure as exc:
            texts = obs.facts[host.name].texts
            old = [
                replace(c.file, content=texts[c.file.path].encode())
                for c in changes
                if c.file.path in texts
            ]
            apply_files(conn, old)
            try:
                start_and_wait(ctx, host, phase, restart=True)
                outcome = "its previous unit and env were put back and it runs again"
            except PhaseFailure:
                outcome = "putting its previous unit and env back did not bring it up either"
            raise PhaseFailure(phase, None, f"{detail_of(exc)}\n{host.name}: {outcome}") from None

    reasons = {n: "; ".join(p.restart_reasons) for n, p in plans.items() if p.restart_reasons}
    roll(
        ctx,
        todo,
        restart,
        phase="restart",
        describe="restart etcd (" + "; ".join(sorted(set(reasons.values()))) + ")",
    )


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
