"""Host phases shared by workflows (up, add-node, restore): certs, install, start."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.adapters.etcd_api import EtcdApiError, Member
from orchestrator.adapters.pki import IssuedCert, pem_fingerprints
from orchestrator.adapters.release import Release, arch_for, fetch_release
from orchestrator.adapters.transport import Pending
from orchestrator.core.errors import PhaseFailure, SafetyRefusal
from orchestrator.core.facts import HostFacts
from orchestrator.core.host_plan import DesiredFile, HostPlan, ca_file, desired_files
from orchestrator.core.inventory import Host
from orchestrator.core.ownership import ca_trust
from orchestrator.core.render import pki_paths, render_etcd_env
from orchestrator.engine.cluster import ClusterView
from orchestrator.engine.context import RunContext
from orchestrator.engine.hosts import raise_for_failures
from orchestrator.engine.operations import journal_tail, setup_host
from orchestrator.engine.polling import Backoff

if TYPE_CHECKING:
    from orchestrator.adapters.transport import HostConnection, HostResult

START_TIMEOUT = 120.0


@dataclass
class Observed:
    """Facts of every host plus the cluster as its running members see it."""

    facts: dict[str, HostFacts]
    view: ClusterView | None
    token: str
    certs: dict[str, dict[str, IssuedCert]] = field(default_factory=dict)

    def member_of(self, ctx: RunContext, host: Host) -> Member | None:
        return self.view.by_peer_url(ctx.inv.peer_url(host)) if self.view else None


def desired_for(ctx: RunContext, host: Host, obs: Observed, env: str) -> list[DesiredFile]:
    certs = {k: (c.cert_pem, c.key_pem) for k, c in obs.certs[host.name].items()}
    return desired_files(
        ctx.inv, host, env=env, ca_pem=ctx.pki.trust_pem(), certs=certs, marker=ctx.marker()
    )


def issue_certs(ctx: RunContext) -> dict[str, dict[str, IssuedCert]]:
    inv = ctx.inv
    if ctx.pki.ensure_ca(inv.cluster.ca_days):
        ctx.ui.info(
            "certs",
            f"created a new CA in {ctx.pki.ca_cert_path.parent} "
            "(its key never leaves this machine)",
        )
    out = {}
    for host in inv.hosts:
        out[host.name] = ctx.pki.ensure_host_certs(
            inv, host, renew_within_days=inv.cluster.renew_within_days
        )
        issued = [c for c in out[host.name].values() if c.changed]
        reasons = sorted({c.reason.removeprefix("issued: ") for c in issued})
        if issued:
            kinds = ", ".join(c.kind for c in issued)
            ctx.ui.info(f"certs {host.name}", f"issued {kinds} ({'; '.join(reasons)})")
        else:
            ctx.ui.debug(f"certs {host.name}", "all certs reused: valid and SANs match")
    return out


def foreign_ca_hosts(ctx: RunContext, facts: dict[str, HostFacts]) -> list[str]:
    """Hosts holding a cluster (data, or etcd running) whose CA file shares no certificate
    with the state dir's CAs. `facts` must carry the CA file's text (see `ca_facts`)."""
    ca_path = pki_paths(ctx.inv)["ca.crt"]
    known = ctx.pki.known_ca_fingerprints()
    trust = {
        n: ca_trust(pem_fingerprints(f.texts.get(ca_path, "").encode()), known)
        for n, f in facts.items()
    }
    # "unknown" (no CA in the state dir at all): theirs is none of ours either.
    return [n for n, f in facts.items() if f.holds_cluster and trust[n] in ("foreign", "unknown")]


def check_ca(
    ctx: RunContext, facts: dict[str, HostFacts], created_now: bool, *, data_checked: bool = False
) -> None:
    """Refuse when every host that holds a cluster trusts none of the state dir's CAs: the
    state dir was lost (a CA made again, by this run or an earlier one) or is another
    cluster's, and certs from our CA would cut the members off from each other. When only
    some do, those hold another cluster's data: refused here too, unless the caller's own
    data checks (`data_checked`: `up`, whose --force moves such data aside) handle them."""
    foreign = foreign_ca_hosts(ctx, facts)
    if not foreign:
        return
    holding = [n for n, f in facts.items() if f.holds_cluster]
    names = ", ".join(foreign)
    if len(foreign) < len(holding):
        if data_checked:
            return
        raise SafetyRefusal(
            f"hosts {names} hold data of a cluster that trusts another CA (the others trust "
            "this state dir's CA); etcd-deploy up --force moves that data aside; nothing was "
            "changed"
        )
    local = ctx.pki.ca_cert_path.parent
    why = f"there was no CA in {local}" if created_now else f"none of the CAs in {local} is it"
    raise SafetyRefusal(
        f"hosts {names} hold a cluster that trusts another CA, and {why}: restore the state "
        f"dir ({ctx.inv.cluster.state_dir}) from its backup; nothing was changed"
    )


def ca_facts(ctx: RunContext, names: Iterable[str]) -> dict[str, list[DesiredFile]]:
    """The facts request that lets `check_ca` read each host's CA file."""
    ca = ca_file(ctx.inv, ctx.pki.trust_pem())
    return {name: [ca] for name in names}


@dataclass
class Installs:
    """The per-host installs, under way in parallel: a membership step waits only for its
    own host. Used as a context manager, leaving it waits for every host."""

    ctx: RunContext
    pending: Pending[None]

    def ready(self, name: str) -> None:
        """Wait for `name`'s install. When it, or any install finished so far, failed: wait
        for every host and report them all (no membership change follows a failure)."""
        if name in self.pending.futures:
            self.pending.result(name)
        if self.pending.failed_so_far():
            self.finish()

    def host_ready(self, name: str) -> None:
        """Wait for `name`'s install; raise its own failure, if any (other hosts aside)."""
        if name in self.pending.futures:
            error = self.pending.result(name).error
            if error is not None:
                raise error

    def finish(self) -> None:
        raise_for_failures(self.ctx, "install", self.pending.results())

    def __enter__(self) -> Installs:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.finish()
        else:
            self.pending.results()  # no host is still being written when the error is told


def fetch_releases(
    ctx: RunContext, obs: Observed, plans: dict[str, HostPlan]
) -> dict[str, Release]:
    """The release for every architecture the plans install, fetched and verified: done
    before any host changes (a dead mirror or a bad checksum changes nothing)."""
    inv = ctx.inv
    releases: dict[str, Release] = {}
    for arch in sorted({arch_for(obs.facts[n].arch) for n, p in plans.items() if p.install}):
        with ctx.ui.progress(
            f"[release] etcd {inv.cluster.etcd_version} linux-{arch}", None
        ) as bar:
            releases[arch] = fetch_release(
                inv.cluster.release_url,
                inv.cluster.etcd_version,
                arch,
                progress=bar,
                log=lambda m: ctx.ui.info("release", m),
                sha256=inv.cluster.release_pin(inv.cluster.etcd_version, arch),
            )
        ctx.ui.info(
            "release",
            f"etcd {inv.cluster.etcd_version} linux-{arch} verified "
            f"(sha256 {releases[arch].sha256[:16]}...)",
        )
    return releases


def install_hosts(
    ctx: RunContext,
    obs: Observed,
    plans: dict[str, HostPlan],
    releases: dict[str, Release],
    first: Collection[str] = (),
) -> Installs:
    """Start, per host in parallel: user and dirs, binaries (from `releases`, see
    `fetch_releases`), files (a joiner's env waits for its join). The hosts in `first` (the
    one a new cluster starts on) install alone, without sharing bandwidth and CPU: the
    others follow as soon as they are done."""
    inv = ctx.inv

    def one(conn: HostConnection) -> None:
        plan = plans[conn.name]
        files = [c.file for c in plan.files if c not in plan.deferred]
        if not (plan.prepare or plan.install or files):
            return
        release = releases[arch_for(obs.facts[conn.name].arch)] if plan.install else None
        setup_host(conn, inv, files, prepare=bool(plan.prepare), release=release)
        done = []
        if plan.prepare:
            done.append(f"prepared the etcd user and directories ({plan.prepare})")
        if plan.install:
            done.append(f"installed {plan.install}")
        if files:
            done.append(
                f"wrote {len(files)} file(s): " + ", ".join(sorted({f.kind for f in files}))
            )
        ctx.ui.info(f"install {conn.name}", "; ".join(done))

    names = [n for n, p in plans.items() if p.changes]
    leading = ctx.pool.start(one, [n for n in names if n in first])

    def after_leading(conn: HostConnection) -> None:
        leading.results()
        one(conn)

    following = ctx.pool.start(after_leading, [n for n in names if n not in first])
    return Installs(ctx, Pending(leading.futures | following.futures))


def _unit_state(conn: HostConnection) -> dict[str, str]:
    out = conn.run(
        "systemctl show -p ActiveState -p SubState -p InvocationID etcd.service",
        check=False,
        quiet=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


# Writing the unit is always followed by a daemon-reload, so enabling needs no reload of
# its own (each costs systemd about 0.1 s of CPU per host).
ENABLE = "systemctl enable --quiet --no-reload etcd.service"
START_NOW = f"{ENABLE} && systemctl start --no-block etcd.service"


def start_and_wait(ctx: RunContext, host: Host, phase: str, *, restart: bool = False) -> None:
    """Start (or restart) etcd without blocking on systemd, then wait until the new process
    answers on its client URL (etcd serves clients once ready; after a restart, systemd's
    invocation ID and state tell the new process from the old one).

    A process that exits (failed, or waiting to be restarted by systemd) fails the phase
    at once with the member's last journal lines.
    """
    conn = ctx.conn(host)
    verb = "restart" if restart else "start"
    before = conn.run(
        "systemctl show -p InvocationID --value etcd.service; "
        f"{ENABLE} && systemctl {verb} --no-block etcd.service"
    ).stdout.strip()
    endpoint = ctx.inv.client_url(host)
    backoff = Backoff(START_TIMEOUT, first=0.05, longest=0.2)
    while True:
        if not restart:  # nothing answered before: an answer is the new process, ready
            try:
                ctx.client().status(endpoint, timeout=2)
                return
            except EtcdApiError:
                pass
        state = _unit_state(conn)
        if state.get("ActiveState") == "failed" or state.get("SubState") == "auto-restart":
            raise PhaseFailure(
                phase, None, "etcd failed to start; last journal lines:\n" + journal_tail(conn)
            )
        new_process = state.get("InvocationID", "") not in ("", before)
        if restart and new_process and state.get("ActiveState") == "active":
            try:
                ctx.client().status(endpoint, timeout=2)
                return
            except EtcdApiError:
                pass
        if not backoff.pause():
            raise PhaseFailure(
                phase,
                None,
                f"etcd did not answer within {START_TIMEOUT:.0f} s; "
                "last journal lines:\n" + journal_tail(conn),
            )


SEED_TIMEOUT = 10.0


def start_new_cluster(
    ctx: RunContext, founders: list[Host], ready: Callable[[str], None] = lambda _n: None
) -> dict[str, HostResult[None]]:
    """Start the members of a static initial cluster (each after `ready(name)`) without
    waiting for health; every host gets its own result.

    A starting member asks its peers, in peer URL order and with a 1 s timeout each, whether
    it was bootstrapped already. A peer that listens but does not serve yet (it is starting
    too) costs that second: started all at once, members wait on each other up to a second
    per peer. So the member whose peer URL sorts first starts alone, and the others once it
    serves: each asks it first and has its answer at once.
    """
    client = ctx.client()
    seed = min(founders, key=ctx.inv.peer_url)

    def start(conn: HostConnection) -> None:
        ready(conn.name)
        conn.run(START_NOW)

    results = ctx.pool.map(start, [seed.name])
    backoff = Backoff(SEED_TIMEOUT, first=0.02, longest=0.2)
    while results[seed.name].ok and not client.peer_serving(ctx.inv.peer_url(seed), 0.5):
        if not backoff.pause():
            break  # the others start anyway: a slow start, not a failed one
    results |= ctx.pool.map(start, [h.name for h in founders if h is not seed])
    return {h.name: results[h.name] for h in founders}


def member_env(
    ctx: RunContext,
    host: Host,
    obs: Observed,
    *,
    state: str,
    members: list[Member] | None = None,
    version: str | None = None,
    static: bool = False,
) -> str:
    """etcd.env for `host`: a new cluster of itself (or of every host, for a parallel
    bootstrap or with `static`), or the current members plus itself. `version`: the etcd
    version the flags are rendered for (default: the inventory's)."""
    inv = ctx.inv
    if state == "new":
        # One member first (learner mode), or every host at once (bootstrap = "parallel",
        # or a restore: every member restored, then all started together).
        founders = inv.hosts if static or inv.cluster.bootstrap == "parallel" else (host,)
        initial = [(h.name, inv.peer_url(h)) for h in founders]
    else:
        own = inv.peer_url(host)
        # A member added but not started yet has no name: name it from the inventory.
        by_url = {inv.peer_url(h): h.name for h in inv.hosts}
        initial = [
            (m.name or by_url.get(m.peer_urls[0]) or f"member-{m.id:x}", m.peer_urls[0])
            for m in (members or [])
        ]
        if not any(url == own for _, url in initial):
            initial.append((host.name, own))
    return render_etcd_env(
        inv,
        host,
        initial_cluster=initial,
        initial_state=state,
        token=obs.token,
        version=version or inv.cluster.etcd_version,
    )
