"""`up` (and `plan`, `add-node`): what converging the hosts to the inventory takes (pure).

Decisions, in the order a run meets them: whose CA the hosts trust; which hosts hold data
this cluster did not write, or folders that are not ours (refused, or moved aside with
--force); stale members (a member whose host lost etcd and its data); which hosts found a new
cluster, join, start again or restart; version changes (never `up`'s job). Steps, in the
order they run: fetch the release, move aside, install (the founder alone first, the others
in the background), start stopped members and wait until healthy, remove stale members,
bootstrap, join one at a time, enable, restart rolling (leader last).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from orchestrator.core.cluster_view import ClusterView, Member
from orchestrator.core.etcd_unit import UNIT
from orchestrator.core.facts import HostFacts
from orchestrator.core.host_paths import env_path
from orchestrator.core.host_plan import DesiredFile, HostPlan, desired_files, plan_host
from orchestrator.core.inventory import Host, Inventory
from orchestrator.core.member_env import member_env
from orchestrator.core.ownership import (
    CONFIG_RULE,
    DATA_RULE,
    OUR_ENV,
    DirFacts,
    Marker,
    Ownership,
    ca_refusal,
    env_is_ours,
    foreign_ca_hosts,
    judge,
)
from orchestrator.core.plan import Noop, Plan, Refusal, Step
from orchestrator.core.render import env_values


@dataclass(frozen=True)
class UpObserved:
    """What `up` read before deciding: each host's facts, the cluster as its running
    members answer (None: no member answers), the cluster token (the hosts' own, or a new
    one), whose CA each host trusts (`ownership.ca_trust`), and what every host should get:
    the CA (bundle) PEM, its leaf certs (kind -> (cert, key)) and our marker."""

    facts: Mapping[str, HostFacts]
    view: ClusterView | None
    token: str
    trust: Mapping[str, str]
    ca_pem: bytes
    certs: Mapping[str, Mapping[str, tuple[bytes, bytes]]]
    marker: Marker
    ca_created: bool = False
    pki_dir: str = ""  # where the local CA lives (for messages)

    def member_of(self, inv: Inventory, host: Host) -> Member | None:
        return self.view.by_peer_url(inv.peer_url(host)) if self.view else None


def token_from(facts: Mapping[str, HostFacts], env_path: str) -> str | None:
    """The cluster token the hosts' etcd.env files carry, if any."""
    for f in facts.values():
        token = env_values(f.texts.get(env_path, "")).get("ETCD_INITIAL_CLUSTER_TOKEN")
        if token:
            return token
    return None


def _desired(inv: Inventory, host: Host, obs: UpObserved, env: str) -> list[DesiredFile]:
    return desired_files(
        inv, host, env=env, ca_pem=obs.ca_pem, certs=obs.certs[host.name], marker=obs.marker
    )


def _foreign_data(inv: Inventory, obs: UpObserved, scope: Sequence[str]) -> list[str]:
    """With no cluster answering: hosts whose data dir this inventory's cluster did not
    write: no etcd.env of ours names the host (another tool's or a hand-made etcd), or the
    host trusts another CA. `up` would start that data under our certs and join the
    others to it."""
    if obs.view is not None:
        return []  # `_stale_members` compares the hosts with the running cluster's members
    env_file = env_path(inv)
    other_ca = foreign_ca_hosts(_holds(obs.facts), obs.trust)
    return [
        name
        for name in scope
        if obs.facts[name].has_data
        and (
            name in other_ca
            or env_values(obs.facts[name].texts.get(env_file, "")).get("ETCD_NAME") != name
        )
    ]


def _unowned_folders(
    inv: Inventory, obs: UpObserved, scope: Sequence[str]
) -> tuple[dict[str, Ownership], dict[str, Ownership]]:
    """Folders `up` would re-own or write into that are neither ours nor empty: data dirs
    (one holding etcd data is judged by the member and foreign-data rules) and config dirs,
    each host -> verdict."""
    c = inv.cluster
    data: dict[str, Ownership] = {}
    config: dict[str, Ownership] = {}
    for name in scope:
        f = obs.facts[name]
        verdict = judge(c.data_dir, f.folders.get(c.data_dir, DirFacts()), DATA_RULE, obs.marker)
        if not f.has_data and not verdict.may_write:
            data[name] = verdict
        env = env_values(f.texts.get(env_path(inv), ""))
        proven = OUR_ENV if env_is_ours(c.name, name, env) else frozenset()
        folder = f.folders.get(c.config_dir, DirFacts())
        verdict = judge(c.config_dir, folder, CONFIG_RULE, obs.marker, proven=proven)
        if not verdict.may_write:
            config[name] = verdict
    return data, config


def _holds(facts: Mapping[str, HostFacts]) -> dict[str, bool]:
    return {n: f.holds_cluster for n, f in facts.items()}


def _per_host(reasons: Mapping[str, str]) -> str:
    return "; ".join(f"{name}: {reason}" for name, reason in reasons.items())


def _unowned_refusals(
    data: Mapping[str, Ownership], config: Mapping[str, Ownership], *, force: bool
) -> list[Refusal]:
    """Folders that are not ours: a symlinked folder is never followed nor moved; another
    tool's config dir is never taken over; the rest moves aside with --force."""
    links = [f"{n}: {v.reason}" for f in (data, config) for n, v in f.items() if v.state == "link"]
    if links:
        return [Refusal(None, "; ".join(links))]
    others = {n: v.reason for n, v in config.items() if v.state != "foreign"}
    if others:
        return [
            Refusal(
                None,
                f"{_per_host(others)}. etcd-deploy writes only into folders that are empty or "
                "carry its marker, and never takes over another tool's config dir: choose "
                "another cluster.config_dir, or empty that folder by hand",
            )
        ]
    movable = {n: [v.reason] for n, v in data.items()}
    for name, verdict in config.items():
        movable.setdefault(name, []).append(verdict.reason)
    if movable and not force:
        return [
            Refusal(
                None,
                f"{_per_host({n: ', '.join(r) for n, r in movable.items()})}. etcd-deploy "
                "writes only into folders that are empty or carry its marker: to move them "
                "aside (never deleted) and use these folders: etcd-deploy up --force",
                override="--force",
            )
        ]
    return []


def _stale_members(
    inv: Inventory, obs: UpObserved, scope: Sequence[str], *, force: bool
) -> tuple[list[tuple[str, Member]], list[Refusal]]:
    """Stale members (peer URL a member, etcd and data gone from the host), and refusals for
    data dirs of hosts that are not members of the running cluster."""
    stale: list[tuple[str, Member]] = []
    refusals: list[Refusal] = []
    if obs.view is None:
        return stale, refusals  # no running cluster: nothing to compare the hosts with
    for host in map(inv.host, scope):
        f = obs.facts[host.name]
        member = obs.member_of(inv, host)
        if member is None and f.has_data and not force:
            refusals.append(
                Refusal(
                    host.name,
                    f"{inv.cluster.data_dir} holds data, but {host.name} is not a member of the "
                    "running cluster (a removed member or another cluster); to move that data "
                    "dir aside and join: etcd-deploy up --force",
                    override="--force",
                )
            )
        if member is not None and member.started and not f.holds_cluster:
            if force:
                stale.append((host.name, member))
            else:
                refusals.append(
                    Refusal(
                        host.name,
                        f"its peer URL {inv.peer_url(host)} is still a member ({member.id:x}) "
                        "but etcd and its data are gone from the host; starting a fresh member "
                        "there would split the cluster. To remove the stale member and join "
                        "the host again: etcd-deploy up --force",
                        override="--force",
                    )
                )
    return stale, refusals


def host_plans(
    inv: Inventory, obs: UpObserved, facts: Mapping[str, HostFacts], scope: Sequence[str]
) -> dict[str, HostPlan]:
    """What each host in `scope` needs (see `host_plan.plan_host`), given `facts` (with what
    is moved aside already forgotten)."""
    plans = {}
    members = obs.view.members if obs.view else []
    fresh = obs.view is None and not any(x.has_data for x in facts.values())
    for i, host in enumerate(inv.hosts):
        if host.name not in scope:
            continue
        member = obs.member_of(inv, host)
        f = facts[host.name]
        # A member whose host lost etcd and its data is stale: it joins again (after removal).
        # A learner (a join cut short after its start) joins again too: the join promotes it.
        is_member = (
            member is not None and member.started and not member.is_learner and f.holds_cluster
        )
        bootstrap = fresh and (i == 0 or inv.cluster.bootstrap == "parallel")
        if obs.view is None and f.has_data:
            is_member = True  # a stopped cluster: its members start again
        env = member_env(
            inv,
            host,
            token=obs.token,
            state="new" if bootstrap else "existing",
            members=members,
        )
        plans[host.name] = plan_host(
            inv,
            host,
            _desired(inv, host, obs, env),
            f,
            version=inv.cluster.etcd_version,
            member=is_member,
            bootstrap=bootstrap,
        )
    return plans


def _version_refusal(
    inv: Inventory, obs: UpObserved, plans: Mapping[str, HostPlan]
) -> list[Refusal]:
    """`up` never swaps the binary under a running member: that is `upgrade`'s job."""
    upgrades = [n for n, p in plans.items() if p.install and obs.facts[n].running]
    if not upgrades:
        return []
    version = inv.cluster.etcd_version
    installed = sorted({str(obs.facts[n].etcd_version) for n in upgrades})
    return [
        Refusal(
            None,
            f"etcd on {', '.join(upgrades)} runs {', '.join(installed)} and the inventory asks "
            f"for {version}: `up` never changes the version of running members; use "
            f"etcd-deploy upgrade {version} (it checks the version path, takes a backup and "
            "rolls back a member that fails)",
        )
    ]


def _foreign_members(inv: Inventory, view: ClusterView | None) -> list[str]:
    if view is None:
        return []
    ours = {inv.peer_url(h) for h in inv.hosts}
    return [
        f"member {m.name or m.id} ({', '.join(m.peer_urls)}) is not in the inventory; left alone"
        for m in view.members
        if not ours.intersection(m.peer_urls)
    ]


def _install_step(name: str, plan: HostPlan, background: bool) -> Step:
    return Step(
        "install",
        name,
        plan.install_summary(done=False),
        background=background,
        detail=_file_lines(plan),
        args={"plan": plan},
    )


def _file_lines(plan: HostPlan) -> tuple[str, ...]:
    """The dry run's lines for a host's file changes (a diff for files that are not
    secret), then what is left alone."""
    lines: list[str] = []
    for change in plan.files:
        secret = " (secret, no diff)" if change.file.secret else ""
        later = " (written at its turn)" if change in plan.deferred else ""
        lines.append(f"~ {change.file.path}: {change.reason}{secret}{later}")
        lines.extend(f"    {line}" for line in change.diff.splitlines())
    lines.extend(f"= {noop}" for noop in plan.noops)
    return tuple(lines)


@dataclass(frozen=True)
class _Decided:
    """What `plan_up` decided per host, turned into steps by `_steps`: each host's plan,
    stale members to remove, folders to move aside (config dirs, data dirs before the
    install, data dirs just before a join)."""

    plans: Mapping[str, HostPlan]
    stale: Sequence[tuple[str, Member]]
    config_aside: Sequence[str]
    data_aside: Sequence[str]
    at_join: Sequence[str]


def _membership_steps(inv: Inventory, obs: UpObserved, decided: _Decided) -> list[Step]:
    plans, stale, data_aside_at_join = decided.plans, decided.stale, decided.at_join
    steps: list[Step] = []
    starting = [n for n, p in plans.items() if p.membership == "start"]
    for name in starting:
        steps.append(Step("start", name, "start etcd", "member with data, etcd stopped"))
    if starting:
        steps.append(
            Step(
                "start",
                None,
                "wait until the cluster is healthy",
                quorum_check=True,
                changes=False,
                kind="healthy",
            )
        )
    for name, member in stale:
        steps.append(
            Step(
                "remove",
                name,
                f"remove stale member {member.id:x}",
                "etcd and its data are gone from the host (--force)",
                kind="remove-stale",
                destructive=True,
                quorum_check=True,
                args={"member": member},
            )
        )
    founders = [n for n, p in plans.items() if p.membership == "bootstrap"]
    if founders:
        steps.append(
            Step(
                "bootstrap",
                founders[0] if len(founders) == 1 else None,
                f"start a new cluster {inv.cluster.name!r} on {', '.join(founders)}",
                "no member answers and no host holds data",
                args={"founders": founders},
            )
        )
    for name, plan in plans.items():
        if plan.membership != "join":
            continue
        if name in data_aside_at_join:
            steps.append(_aside_step(inv, name, "data", "join"))
        known = obs.member_of(inv, inv.host(name))
        again = known is not None and known.is_learner
        steps.append(
            Step(
                "join",
                name,
                "add as learner, start, promote once in sync",
                "a learner added earlier: complete its join" if again else "not a member",
                quorum_check=True,
            )
        )
    return steps


def _aside_step(inv: Inventory, name: str, what: str, phase: str) -> Step:
    folder = inv.cluster.data_dir if what == "data" else inv.cluster.config_dir
    return Step(
        phase,
        name,
        f"move {folder} aside (never deleted)",
        "--force",
        kind=f"{what}-aside",
        destructive=True,
    )


def plan_up(
    inv: Inventory, obs: UpObserved, *, force: bool = False, only: str | None = None
) -> Plan:
    """Converge every host, or with `only` just that one (`add-node`: no other host changes)."""
    scope = [only] if only else [h.name for h in inv.hosts]
    warnings = tuple(_foreign_members(inv, obs.view))
    refused = ca_refusal(
        _holds(obs.facts),
        obs.trust,
        created_now=obs.ca_created,
        pki_dir=obs.pki_dir,
        state_dir=str(inv.cluster.state_dir),
        data_checked=True,
    )
    if refused:
        return Plan("up", refusals=(Refusal(None, refused),), warnings=warnings)
    if only and obs.view is None:
        return Plan(
            "up",
            refusals=(
                Refusal(
                    None,
                    f"no running cluster to add {only} to: bootstrap it first with etcd-deploy up",
                ),
            ),
            warnings=warnings,
        )
    stale, refusals = _stale_members(inv, obs, scope, force=force)
    foreign = _foreign_data(inv, obs, scope)
    if foreign and not force:
        refusals.append(
            Refusal(
                None,
                f"{', '.join(foreign)}: {inv.cluster.data_dir} holds data that this inventory's "
                "cluster did not write (no etcd.env of ours names the host, or the host trusts "
                "another CA) and no member answers; to move that data dir aside and start "
                "there afresh: etcd-deploy up --force",
                override="--force",
            )
        )
    data, config = _unowned_folders(inv, obs, scope)
    refusals += _unowned_refusals(data, config, force=force)
    if refusals:
        return Plan("up", refusals=tuple(refusals), warnings=warnings)
    data_aside = foreign + [n for n in data if n not in foreign]
    # Planned as bare: what moves aside is gone before the install.
    facts = {n: _without(inv, f, n in data_aside, n in config) for n, f in obs.facts.items()}
    plans = host_plans(inv, obs, facts, scope)
    refusals += _version_refusal(inv, obs, plans)
    # Data of no member (a removed member's, another cluster's) moves aside just before its
    # join (--force); never a learner's (a join cut short: completed).
    at_join = [
        n
        for n, p in plans.items()
        if p.membership == "join"
        and facts[n].has_data
        and force
        and obs.member_of(inv, inv.host(n)) is None
    ]
    for name, _member in stale:
        plans[name].membership = "join"
    return Plan(
        "up",
        steps=tuple(_steps(inv, obs, _Decided(plans, stale, sorted(config), data_aside, at_join))),
        noops=tuple(Noop(n, "; ".join(p.noops)) for n, p in plans.items() if not p.changes),
        refusals=tuple(refusals),
        warnings=warnings,
    )


def _without(inv: Inventory, facts: HostFacts, data: bool, config: bool) -> HostFacts:
    """`facts` as they will be once the data dir and/or config dir moved aside."""
    if not (data or config):
        return facts
    copy = replace(
        facts,
        dirs=dict(facts.dirs),
        files=dict(facts.files),
        texts=dict(facts.texts),
        links=set(facts.links),
        folders=dict(facts.folders),
    )
    if data:
        copy.has_data = False
    if config:
        copy.forget(inv.cluster.config_dir)
    return copy


def _steps(inv: Inventory, obs: UpObserved, decided: _Decided) -> list[Step]:
    plans = decided.plans
    steps: list[Step] = []
    arches = sorted({obs.facts[n].arch for n, p in plans.items() if p.install})
    for arch in arches:
        steps.append(
            Step(
                "release",
                None,
                f"fetch etcd {inv.cluster.etcd_version} for {arch or 'the hosts'}, verified",
                "before any host changes",
                kind="release",
                changes=False,
                args={"arch": arch},
            )
        )
    steps += [_aside_step(inv, n, "config", "up") for n in decided.config_aside]
    steps += [_aside_step(inv, n, "data", "up") for n in decided.data_aside]
    # A learner-mode bootstrap waits for its one founder: that host installs first, alone.
    founders = [n for n, p in plans.items() if p.membership == "bootstrap"]
    first = founders if len(founders) == 1 else []
    installs = {n: p for n, p in plans.items() if p.install_summary(done=False)}
    steps += [_install_step(n, installs[n], background=False) for n in first if n in installs]
    steps += [_install_step(n, p, background=True) for n, p in installs.items() if n not in first]
    steps += _membership_steps(inv, obs, decided)
    steps += [
        Step("enable", n, f"enable {UNIT} at boot", parallel=True)
        for n, p in plans.items()
        if p.enable
    ]
    for name, plan in plans.items():
        if plan.restart_reasons:
            steps.append(
                Step(
                    "restart",
                    name,
                    f"restart etcd ({'; '.join(plan.restart_reasons)})",
                    rolling=True,
                    quorum_check=True,
                    detail=_file_lines(plan) if name not in installs else (),
                    args={"plan": plan},
                )
            )
    return steps
