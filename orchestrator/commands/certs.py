"""`certs check`, `certs renew`, `certs rotate-ca`: the certificate lifecycle.

etcd re-reads its cert and key files on every new TLS handshake, so renewed leaves take
effect with no restart; it loads the trusted CA file once, at start, so a new CA goes out
as an old+new bundle through the rolling engine first.

`check` only reads. `renew` and `rotate-ca` observe (the hosts' facts, with the run locks; a
dry run reads them without), read the leaves on this machine and the rotation's stage, and
let `core.planners.certs` decide what is issued and why; `--dry-run` prints that plan and
the executor runs it (issuing writes only here: the CA key never leaves this machine).
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.adapters.etcd_api import EtcdApiError
from orchestrator.adapters.lock import new_owner
from orchestrator.adapters.pki import IssuedCert, cert_info, desired_sans
from orchestrator.adapters.tls_probe import served_certificate
from orchestrator.core.cluster_view import ClusterView
from orchestrator.core.errors import (
    EXIT_CERTS_EXPIRING,
    EXIT_OK,
    PhaseFailure,
    TransportError,
    UsageError,
)
from orchestrator.core.etcd_unit import START_NO_BLOCK
from orchestrator.core.facts import HostFacts
from orchestrator.core.host_plan import ca_file, cert_files
from orchestrator.core.inventory import Host
from orchestrator.core.plan import Step
from orchestrator.core.planners.certs import CertsObserved, plan_renew, plan_rotate_ca
from orchestrator.core.planners.rolling import NOT_A_MEMBER
from orchestrator.core.render import HOST_CERT_KINDS, pki_paths
from orchestrator.engine.cluster import observe, wait_healthy
from orchestrator.engine.context import RunContext
from orchestrator.engine.executor import Execution, Handler, execute, show_plan
from orchestrator.engine.hosts import locked_hosts, raise_for_failures
from orchestrator.engine.identity import read_unlocked
from orchestrator.engine.operations import apply_files
from orchestrator.engine.phases import ca_facts, ca_trust_of, start_and_wait
from orchestrator.engine.polling import Backoff

if TYPE_CHECKING:
    from orchestrator.adapters.transport import HostConnection

PROVE_TIMEOUT = 30.0
UNREACHABLE = "unreachable"


@dataclass
class CertRow:
    host: str
    source: str  # "file", "served client port", "served peer port", "local CA"
    kind: str
    expires: str
    days_left: float | None
    issuer: str
    sans_match: str  # "yes", "no: ...", or "-" where SANs do not apply
    problem: str = ""


def _host_cert_texts(ctx: RunContext) -> dict[str, dict[str, str]]:
    """host -> kind -> PEM text of the cert files on the host (one command per host)."""
    paths = pki_paths(ctx.inv)
    wanted = {"ca": paths["ca.crt"]} | {k: paths[f"{k}.crt"] for k in HOST_CERT_KINDS}

    def one(conn: HostConnection) -> dict[str, str]:
        script = "".join(
            f"echo '@@ {kind}'; [ -L {shlex.quote(path)} ] || cat {shlex.quote(path)} 2>/dev/null; "
            for kind, path in wanted.items()
        )
        out = conn.run(script, quiet=True).stdout
        texts: dict[str, str] = {}
        kind = ""
        for line in out.splitlines():
            if line.startswith("@@ "):
                kind = line[3:]
                texts[kind] = ""
            elif kind:
                texts[kind] += line + "\n"
        return texts

    results = ctx.pool.map(one, [h.name for h in ctx.inv.hosts])
    if not any(r.ok for r in results.values()):
        raise_for_failures(ctx, "certs", results)  # no host answered: an SSH error, not a table
    return {
        n: r.value if r.value is not None else {UNREACHABLE: str(r.error)}
        for n, r in results.items()
    }


def _row(
    ctx: RunContext, host: Host | None, source: str, kind: str, pem: str, warn_days: float
) -> CertRow:
    info = cert_info(pem.encode())
    sans = "-"
    if host is not None and kind in ("server", "peer"):
        want_dns, want_ips = desired_sans(ctx.inv, host, kind)
        have = (set(info.dns_sans), set(info.ip_sans))
        sans = "yes" if have == (set(want_dns), set(want_ips)) else "no: inventory differs"
    problem = ""
    if info.days_left < 0:
        problem = "EXPIRED"
    elif info.days_left < warn_days:
        problem = f"expires within {warn_days:g} days"
    if sans.startswith("no"):
        problem = (problem + "; " if problem else "") + "SANs differ from the inventory"
    return CertRow(
        host=host.name if host else "-",
        source=source,
        kind=kind,
        expires=info.not_after.strftime("%Y-%m-%d %H:%M UTC"),
        days_left=round(info.days_left, 1),
        issuer=info.issuer_cn,
        sans_match=sans,
        problem=problem,
    )


def collect_cert_rows(ctx: RunContext, warn_days: float) -> list[CertRow]:
    inv = ctx.inv
    ctx.pki.require_ca()
    client_cert, client_key = ctx.pki.ensure_client_cert(inv.cluster.cert_days)
    rows = [_row(ctx, None, "local CA", "ca", ctx.pki.ca_cert_pem().decode(), warn_days)]
    texts = _host_cert_texts(ctx)
    for host in inv.hosts:
        on_host = texts[host.name]
        if UNREACHABLE in on_host:  # its served certs would only time out: not probed
            problem = f"{UNREACHABLE}: {on_host[UNREACHABLE]}"
            rows.append(CertRow(host.name, "file", "-", "", None, "", "-", problem))
            continue
        for kind, pem in on_host.items():
            if not pem.strip():
                rows.append(CertRow(host.name, "file", kind, "", None, "", "-", "missing"))
                continue
            # A CA file may hold a bundle (during a rotation): report its first certificate.
            rows.append(_row(ctx, host, "file", kind, pem, warn_days))
        for source, port, kind in (
            ("served client port", inv.cluster.client_port, "server"),
            ("served peer port", inv.cluster.peer_port, "peer"),
        ):
            try:
                pem = served_certificate(
                    ctx.links(),
                    host.etcd_address,
                    port,
                    client_cert=client_cert,
                    client_key=client_key,
                ).decode()
            except OSError as exc:
                rows.append(CertRow(host.name, source, kind, "", None, "", "-", f"no TLS: {exc}"))
                continue
            rows.append(_row(ctx, host, source, kind, pem, warn_days))
    return rows


def run_check(ctx: RunContext, *, warn_days: float, as_json: bool) -> int:
    rows = collect_cert_rows(ctx, warn_days)
    unreachable = [r.host for r in rows if r.problem.startswith(UNREACHABLE)]
    due = [r for r in rows if r.problem and r.host not in unreachable]
    if as_json:
        ctx.ui.print_json(
            {"warn_days": warn_days, "ok": not due, "certificates": [asdict(r) for r in rows]}
        )
    else:
        ctx.ui.table(
            f"certificates of cluster {ctx.inv.cluster.name} (warn within {warn_days:g} days)",
            ["HOST", "SOURCE", "KIND", "EXPIRES", "DAYS LEFT", "ISSUER", "SANS MATCH", "PROBLEM"],
            [
                [
                    r.host,
                    r.source,
                    r.kind,
                    r.expires,
                    "" if r.days_left is None else f"{r.days_left:g}",
                    r.issuer,
                    r.sans_match,
                    r.problem,
                ]
                for r in rows
            ],
            [("red" if r.problem else None) for r in rows],
        )
        ctx.ui.print(
            f"{len(due)} problem(s): run etcd-deploy certs renew" if due else "all certificates ok"
        )
    if unreachable:
        raise TransportError(
            ", ".join(unreachable), "unreachable over SSH: their certificates were not checked"
        )
    return EXIT_CERTS_EXPIRING if due else EXIT_OK


# -- renewal and CA rotation: observe, plan (`core.planners.certs`), execute -------------------


def prove_served(ctx: RunContext, host: Host, kinds: dict[str, str]) -> None:
    """Wait until the member serves, on each port, the cert whose fingerprint is given
    (etcd reads the new files on the next handshake)."""
    inv = ctx.inv
    client_cert, client_key = ctx.pki.client_cert_path, ctx.pki.client_key_path
    ports = {"server": inv.cluster.client_port, "peer": inv.cluster.peer_port}
    backoff = Backoff(PROVE_TIMEOUT, first=0.1, longest=0.3)
    for kind, fingerprint in kinds.items():
        while True:
            try:
                pem = served_certificate(
                    ctx.links(),
                    host.etcd_address,
                    ports[kind],
                    client_cert=client_cert,
                    client_key=client_key,
                    timeout=2,
                )
                if cert_info(pem).sha256 == fingerprint:
                    break
            except OSError:
                pass
            if not backoff.pause():
                raise PhaseFailure(
                    f"renew {host.name}",
                    None,
                    f"still not serving the new {kind} cert after {PROVE_TIMEOUT:.0f} s",
                )
    ctx.ui.info(f"renew {host.name}", "serving the new certs: " + ", ".join(kinds))


def _observed(
    ctx: RunContext, hosts: list[Host], facts: dict[str, HostFacts], **more: Any
) -> CertsObserved:
    """The leaves of `hosts` as they are on this machine, and whose CA each host trusts."""
    return CertsObserved(
        leaves={h.name: ctx.pki.read_host_certs(h) for h in hosts},
        facts=facts,
        trust=ca_trust_of(ctx, facts),
        now=dt.datetime.now(dt.UTC),
        pki_dir=str(ctx.pki.ca_cert_path.parent),
        **more,
    )


@dataclass
class _Handlers:
    """What each step of `certs renew` / `certs rotate-ca` does; the leaves issued so far."""

    ctx: RunContext
    issued: dict[str, dict[str, IssuedCert]] = field(default_factory=dict)

    def table(self) -> dict[str, Handler]:
        return {
            "issue": self.issue,
            "push": self.push,
            "start": self.start,
            "prove": self.prove,
            "healthy": self.healthy,
            "new-ca": self.new_ca,
            "trust": self.trust,
            "switch": self.switch,
            "client-cert": self.client_cert,
            "end-rotation": self.end_rotation,
        }

    def issue(self, step: Step, _run: Execution) -> None:
        """Written here, in the state dir (the CA key never leaves this machine)."""
        ctx = self.ctx
        host = ctx.inv.host(str(step.host))
        cert = ctx.pki.issue_host_cert(ctx.inv, host, step.args["kind"], step.reason)
        self.issued.setdefault(host.name, {})[cert.kind] = cert
        ctx.ui.debug(step.label, f"{cert.kind}: {cert.reason}")

    def push(self, step: Step, _run: Execution) -> None:
        """The host's new certs and keys, in one command."""
        ctx = self.ctx
        certs = {k: (c.cert_pem, c.key_pem) for k, c in self.issued[str(step.host)].items()}
        apply_files(ctx.conn(str(step.host)), cert_files(ctx.inv, certs))
        ctx.ui.info(f"renew {step.host}", "pushed " + ", ".join(certs))

    def start(self, step: Step, _run: Execution) -> None:
        self.ctx.conn(str(step.host)).run(START_NO_BLOCK)
        self.ctx.ui.info(f"renew {step.host}", "etcd was not running: started")

    def prove(self, step: Step, _run: Execution) -> None:
        """What the member serves is the cert on this machine (the one just issued)."""
        pki = self.ctx.pki
        host = self.ctx.inv.host(str(step.host))
        kinds = {
            k: cert_info(pki.host_cert_paths(host.name, k)[0].read_bytes()).sha256
            for k in step.args["kinds"]
        }
        prove_served(self.ctx, host, kinds)

    def healthy(self, step: Step, _run: Execution) -> None:
        if step.args["reset_client"]:
            self.ctx.reset_client()
        wait_healthy(self.ctx.client(), timeout=step.args["timeout"])

    def new_ca(self, _step: Step, _run: Execution) -> None:
        ctx = self.ctx
        ctx.pki.begin_ca_rotation(ctx.inv.cluster.ca_days)
        ctx.ui.info("rotate-ca", "new CA made; every member will trust old and new")
        ctx.reset_client()  # the client trusts the bundle from now on

    def trust(self, step: Step, _run: Execution) -> None:
        """The current trust file (bundle, or the CA alone) as the member's ca.crt, then a
        restart: etcd reads its trusted CAs at start only (a rolling step: one at a time)."""
        ctx = self.ctx
        host = ctx.inv.host(str(step.host))
        apply_files(ctx.conn(host), [ca_file(ctx.inv, ctx.pki.trust_pem())])
        start_and_wait(ctx, host, f"rotate-ca {host.name}", restart=True)

    def switch(self, _step: Step, _run: Execution) -> None:
        self.ctx.pki.switch_to_next_ca()
        self.ctx.ui.info("rotate-ca", "the new CA now signs; re-issuing every certificate")

    def client_cert(self, _step: Step, _run: Execution) -> None:
        self.ctx.pki.ensure_client_cert(self.ctx.inv.cluster.cert_days)
        self.ctx.reset_client()

    def end_rotation(self, _step: Step, _run: Execution) -> None:
        self.ctx.pki.end_ca_rotation()


def run_renew(
    ctx: RunContext,
    *,
    within: int | None,
    names: list[str],
    dry_run: bool = False,
    as_json: bool = False,
) -> int:
    """Re-issue leaves (all, or those expiring within `within` days) and push them; start
    members that are down (expired certs can have broken the cluster), prove what they serve.
    A dry run prints the plan (hosts read without locks; nothing issued or written)."""
    inv = ctx.inv
    hosts = [inv.host(n) for n in names] if names else list(inv.hosts)
    scope = [h.name for h in hosts]
    if dry_run:
        if not ctx.pki.ca_cert_path.exists():
            raise UsageError(
                f"no CA in {ctx.pki.pki_dir}: nothing to renew (etcd-deploy up makes it)"
            )
        ctx.pki.require_ca()
        facts = read_unlocked(ctx, scope, ca_facts(ctx, scope))
        plan = plan_renew(inv, _observed(ctx, hosts, facts), within=within, names=scope)
        return show_plan(ctx, plan, as_json=as_json)
    ctx.lock_state(new_owner("certs renew"))
    created = ctx.pki.ensure_ca(inv.cluster.ca_days)
    ctx.pki.ensure_client_cert(inv.cluster.cert_days)
    ctx.reset_client()
    with locked_hosts(ctx, "certs renew", scope, files=ca_facts(ctx, scope)) as facts:
        obs = _observed(ctx, hosts, facts, ca_created=created)
        plan = plan_renew(inv, obs, within=within, names=scope)
        if not plan.refusals and not plan.changes:
            ctx.ui.info("renew", f"nothing expires within {within} days; nothing to do")
            return EXIT_OK
        execute(ctx, plan, _Handlers(ctx).table())
    ctx.ui.info("done", "certificates renewed; no etcd restart was needed")
    return EXIT_OK


def _rotation_observed(ctx: RunContext, facts: dict[str, HostFacts]) -> CertsObserved:
    """Besides the leaves: the rotation's stage, this machine's own client cert, and the
    cluster as its members answer (None when none does: the first step waits for it)."""
    try:
        view: ClusterView | None = observe(ctx.client())
    except EtcdApiError:
        view = None
    return _observed(
        ctx,
        list(ctx.inv.hosts),
        facts,
        stage=ctx.pki.rotation_stage,
        view=view,
        client=ctx.pki.read_client_cert(),
    )


def run_rotate_ca(
    ctx: RunContext, *, finish: bool, dry_run: bool = False, as_json: bool = False
) -> int:
    """Replace the CA without downtime (see `core.planners.certs`); a dry run prints the
    plan (hosts read without locks; no CA made, nothing issued or written)."""
    inv = ctx.inv
    pki = ctx.pki
    names = [h.name for h in inv.hosts]
    if dry_run:
        pki.require_ca()
        facts = read_unlocked(ctx, names, ca_facts(ctx, names))
        plan = plan_rotate_ca(inv, _rotation_observed(ctx, facts), finish=finish)
        return show_plan(ctx, plan, as_json=as_json)
    ctx.lock_state(new_owner("certs rotate-ca"))
    pki.require_ca()
    with locked_hosts(ctx, "certs rotate-ca", names, files=ca_facts(ctx, names)) as facts:
        plan = plan_rotate_ca(inv, _rotation_observed(ctx, facts), finish=finish)
        for noop in plan.noops:
            if noop.reason == NOT_A_MEMBER:  # as the rolling engine always said it
                ctx.ui.warn(f"rotate-ca {noop.host}", f"{NOT_A_MEMBER}; skipped")
        execute(ctx, plan, _Handlers(ctx).table())
    if finish:
        ctx.ui.info("done", "the old CA is gone from every member")
        return EXIT_OK
    ctx.ui.print(
        f"Every member now serves certs of the new CA and trusts old and new.\n"
        f"For Kubernetes: give kube-apiserver the bundle {pki.bundle_path} as --etcd-cafile and "
        f"its new client cert and key from {pki.pki_dir}/<host>/apiserver-etcd-client.*, now.\n"
        "Then drop the old CA: etcd-deploy certs rotate-ca --finish"
    )
    return EXIT_OK
