"""Host phases shared by workflows (up, add-node, restore): certs, install, start."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.adapters.etcd_api import EtcdApiError
from orchestrator.adapters.pki import IssuedCert, pem_fingerprints
from orchestrator.adapters.release import Release, arch_for, fetch_release
from orchestrator.adapters.transport import Pending
from orchestrator.core.cluster_view import ClusterView, Member
from orchestrator.core.errors import PhaseFailure, SafetyRefusal
from orchestrator.core.etcd_unit import SHOW_INVOCATION_ID, SHOW_STATE, START_NOW, enable_and
from orchestrator.core.facts import HostFacts
from orchestrator.core.host_plan import DesiredFile, HostPlan, ca_file, desired_files
from orchestrator.core.inventory import Host
from orchestrator.core.member_env import member_env as render_member_env
from orchestrator.core.ownership import ca_refusal, ca_trust
from orchestrator.core.ownership import foreign_ca_hosts as ownership_foreign_ca_hosts
from orchestrator.core.render import pki_paths
from orchestrator.core.versions import Version
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


def ca_trust_of(ctx: RunContext, facts: dict[str, HostFacts]) -> dict[str, str]:
    """Whose CA each host trusts (`ownership.ca_trust`); `facts` must carry the CA file's
    text (see `ca_facts`)."""
    ca_path = pki_paths(ctx.inv)["ca.crt"]
    known = ctx.pki.known_ca_fingerprints()
    return {
        n: ca_trust(pem_fingerprints(f.texts.get(ca_path, "").encode()), known)
        for n, f in facts.items()
    }


def foreign_ca_hosts(ctx: RunContext, facts: dict[str, HostFacts]) -> list[str]:
    """Hosts holding a cluster whose CA is none of the state dir's (`ownership`)."""
    return ownership_foreign_ca_hosts(
        {n: f.holds_cluster for n, f in facts.items()}, ca_trust_of(ctx, facts)
    )


def check_ca(
    ctx: RunContext, facts: dict[str, HostFacts], created_now: bool, *, data_checked: bool = False
) -> None:
    """Refuse, before anything changes, what `ownership.ca_refusal` refuses."""
    refused = ca_refusal(
        {n: f.holds_cluster for n, f in facts.items()},
        ca_trust_of(ctx, facts),
        created_now=created_now,
        pki_dir=str(ctx.pki.ca_cert_path.parent),
        state_dir=str(ctx.inv.cluster.state_dir),
        data_checked=data_checked,
    )
    if refused:
        raise SafetyRefusal(refused + "; nothing was changed")


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


def fetch_one_release(ctx: RunContext, arch: str) -> Release:
    """The inventory's etcd release for `arch` (a host's `uname -m`), fetched and verified:
    done before any host changes (a dead mirror or a bad checksum changes nothing)."""
    inv = ctx.inv
    arch = arch_for(arch)
    with ctx.ui.progress(f"[release] etcd {inv.cluster.etcd_version} linux-{arch}", None) as bar:
        release = fetch_release(
            inv.cluster.release_url,
            inv.cluster.etcd_version,
            arch,
            progress=bar,
            log=lambda m: ctx.ui.info("release", m),
            sha256=inv.cluster.release_pin(inv.cluster.etcd_version, arch),
        )
    ctx.ui.info(
        "release",
        f"etcd {inv.cluster.etcd_version} linux-{arch} verified (sha256 {release.sha256[:16]}...)",
    )
    return release


def fetch_releases(
    ctx: RunContext, obs: Observed, plans: dict[str, HostPlan]
) -> dict[str, Release]:
    """The release for every architecture the plans install (see `fetch_one_release`)."""
    arches = sorted({arch_for(obs.facts[n].arch) for n, p in plans.items() if p.install})
    return {arch: fetch_one_release(ctx, arch) for arch in arches}


def install_host(
    ctx: RunContext, conn: HostConnection, plan: HostPlan, release: Release | None
) -> None:
    """User and dirs, binaries (`release`, when the plan installs), the files written now
    (a joiner's env waits for its join, a running member's for its restart)."""
    said = plan.install_summary(done=True)
    if not said:
        return
    files = [c.file for c in plan.written_now]
    setup_host(conn, ctx.inv, files, prepare=bool(plan.prepare), release=release)
    ctx.ui.info(f"install {conn.name}", said)


def install_hosts(
    ctx: RunContext,
    obs: Observed,
    plans: dict[str, HostPlan],
    releases: dict[str, Release],
    first: Collection[str] = (),
) -> Installs:
    """Start `install_host` on every host with changes, in parallel. The hosts in `first`
    install alone, without sharing bandwidth and CPU: the others follow once they are done."""

    def one(conn: HostConnection) -> None:
        plan = plans[conn.name]
        release = releases[arch_for(obs.facts[conn.name].arch)] if plan.install else None
        install_host(ctx, conn, plan, release)

    names = [n for n, p in plans.items() if p.changes]
    leading = ctx.pool.start(one, [n for n in names if n in first])

    def after_leading(conn: HostConnection) -> None:
        leading.results()
        one(conn)

    following = ctx.pool.start(after_leading, [n for n in names if n not in first])
    return Installs(ctx, Pending(leading.futures | following.futures))


def _unit_state(conn: HostConnection) -> dict[str, str]:
    out = conn.run(SHOW_STATE, check=False, quiet=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def start_and_wait(ctx: RunContext, host: Host, phase: str, *, restart: bool = False) -> None:
    """Start (or restart) etcd without blocking on systemd, then wait until the new process
    answers on its client URL (etcd serves clients once ready; after a restart, systemd's
    invocation ID and state tell the new process from the old one).

    A process that exits (failed, or waiting to be restarted by systemd) fails the phase
    at once with the member's last journal lines.
    """
    conn = ctx.conn(host)
    verb = "restart" if restart else "start"
    before = conn.run(f"{SHOW_INVOCATION_ID}; {enable_and(verb)}").stdout.strip()
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
    version: Version | None = None,
    static: bool = False,
) -> str:
    """etcd.env for `host` with this run's cluster token (see `core.member_env`)."""
    return render_member_env(
        ctx.inv,
        host,
        token=obs.token,
        state=state,
        members=members or (),
        version=version,
        static=static,
    )
