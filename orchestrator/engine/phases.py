"""Host phases shared by workflows (up, add-node, restore): certs, install, start."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from orchestrator.adapters.etcd_api import EtcdApiError
from orchestrator.adapters.pki import IssuedCert, pem_fingerprints
from orchestrator.adapters.release import Release, arch_for, fetch_release
from orchestrator.core.errors import PhaseFailure
from orchestrator.core.etcd_unit import SHOW_INVOCATION_ID, SHOW_STATE, START_NOW, enable_and
from orchestrator.core.facts import HostFacts
from orchestrator.core.host_plan import DesiredFile, HostPlan, ca_file
from orchestrator.core.inventory import Host
from orchestrator.core.ownership import ca_trust
from orchestrator.core.render import pki_paths
from orchestrator.engine.context import RunContext
from orchestrator.engine.operations import journal_tail, setup_host
from orchestrator.engine.polling import Backoff

if TYPE_CHECKING:
    from orchestrator.adapters.transport import HostConnection, HostResult

START_TIMEOUT = 120.0


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


def ca_facts(ctx: RunContext, names: Iterable[str]) -> dict[str, list[DesiredFile]]:
    """The facts request that lets `check_ca` read each host's CA file."""
    ca = ca_file(ctx.inv, ctx.pki.trust_pem())
    return {name: [ca] for name in names}


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
