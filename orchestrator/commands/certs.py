"""`certs check`, `certs renew`, `certs rotate-ca`: the certificate lifecycle.

etcd re-reads its cert and key files on every new TLS handshake, so renewed leaves take
effect with no restart; it loads the trusted CA file once, at start, so a new CA goes out
as an old+new bundle through the rolling engine first.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from orchestrator.adapters.etcd_api import Member
from orchestrator.adapters.lock import new_owner
from orchestrator.adapters.pki import IssuedCert, cert_info, desired_sans
from orchestrator.adapters.tls_probe import served_certificate
from orchestrator.core.errors import EXIT_CHANGES_PENDING, PhaseFailure, TransportError, UsageError
from orchestrator.core.host_plan import ca_file, cert_files
from orchestrator.core.inventory import Host
from orchestrator.core.render import HOST_CERT_KINDS, pki_paths
from orchestrator.engine.cluster import wait_healthy
from orchestrator.engine.context import RunContext
from orchestrator.engine.hosts import locked_hosts, raise_for_failures
from orchestrator.engine.operations import apply_files
from orchestrator.engine.phases import ca_facts, check_ca, start_and_wait
from orchestrator.engine.polling import Backoff
from orchestrator.engine.rolling import roll

if TYPE_CHECKING:
    from orchestrator.adapters.transport import HostConnection

PROVE_TIMEOUT = 30.0
# What a status code of `certs check` means: something expires within the window (or has
# expired, or does not match the inventory).
EXIT_CERTS_DUE = 7
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
                    host.etcd_address, port, client_cert=client_cert, client_key=client_key
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
    return EXIT_CERTS_DUE if due else 0


# -- renewal ----------------------------------------------------------------------------------


def _push(ctx: RunContext, issued: dict[str, dict[str, IssuedCert]]) -> None:
    """Send the re-issued certs and keys to their hosts, in parallel, in one command each."""

    def one(conn: HostConnection) -> None:
        certs = {k: (c.cert_pem, c.key_pem) for k, c in issued[conn.name].items() if c.changed}
        if certs:
            apply_files(conn, cert_files(ctx.inv, certs))
            ctx.ui.info(f"renew {conn.name}", "pushed " + ", ".join(certs))

    raise_for_failures(ctx, "renew", ctx.pool.map(one, list(issued)))


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


def _renew_dry_run(ctx: RunContext, hosts: list[Host], within: int | None) -> int:
    """Which leaves `certs renew` would re-issue, and why; exit 10 when any (like `plan`)."""
    if not ctx.pki.ca_cert_path.exists():
        raise UsageError(f"no CA in {ctx.pki.pki_dir}: nothing to renew (etcd-deploy up makes it)")
    pending = False
    for host in hosts:
        certs = ctx.pki.ensure_host_certs(
            ctx.inv,
            host,
            renew_within_days=within if within is not None else 0,
            force=within is None,
            dry_run=True,
        )
        for cert in certs.values():
            pending |= cert.changed
            verdict = cert.reason.replace("issued:", "would re-issue:", 1)
            ctx.ui.print(f"[renew {host.name}] {cert.kind}: {verdict}")
    return EXIT_CHANGES_PENDING if pending else 0


def run_renew(
    ctx: RunContext, *, within: int | None, names: list[str], dry_run: bool = False
) -> int:
    """Re-issue leaves (all, or those expiring within `within` days) and push them; start
    members that are down (expired certs can have broken the cluster), prove what they serve."""
    inv = ctx.inv
    hosts = [inv.host(n) for n in names] if names else list(inv.hosts)
    if dry_run:
        return _renew_dry_run(ctx, hosts, within)
    ctx.lock_state(new_owner("certs renew"))
    created = ctx.pki.ensure_ca(inv.cluster.ca_days)
    ctx.pki.ensure_client_cert(inv.cluster.cert_days)
    ctx.reset_client()
    scope = [h.name for h in hosts]
    with locked_hosts(ctx, "certs renew", scope, files=ca_facts(ctx, scope)) as facts:
        check_ca(ctx, facts, created)
        issued = {
            h.name: ctx.pki.ensure_host_certs(
                inv,
                h,
                renew_within_days=within if within is not None else 0,
                force=within is None,
            )
            for h in hosts
        }
        if not any(c.changed for certs in issued.values() for c in certs.values()):
            ctx.ui.info("renew", f"nothing expires within {within} days; nothing to do")
            return 0
        _push(ctx, issued)
        for host in hosts:
            if facts[host.name].has_data and not facts[host.name].running:
                ctx.conn(host).run("systemctl start --no-block etcd.service")
                ctx.ui.info(f"renew {host.name}", "etcd was not running: started")
        for host in hosts:
            served = {
                k: cert_info(c.cert_pem).sha256
                for k, c in issued[host.name].items()
                if c.changed and k in ("server", "peer")
            }
            if served and facts[host.name].has_data:
                prove_served(ctx, host, served)
        wait_healthy(ctx.client(), timeout=120)
    ctx.ui.info("done", "certificates renewed; no etcd restart was needed")
    return 0


# -- CA rotation --------------------------------------------------------------------------------


def _roll_out_trust(ctx: RunContext, what: str) -> None:
    """Write the current trust file (bundle or CA) as every member's ca.crt and restart each
    member, one at a time, leader last: etcd reads its trusted CAs at start only."""
    ca = ca_file(ctx.inv, ctx.pki.trust_pem())

    def restart(host: Host, _member: Member) -> None:
        apply_files(ctx.conn(host), [ca])
        start_and_wait(ctx, host, f"rotate-ca {host.name}", restart=True)

    roll(ctx, list(ctx.inv.hosts), restart, phase="rotate-ca", describe=what)


def _require_rotation_to_finish(ctx: RunContext) -> None:
    if ctx.pki.rotation_stage != "switched":
        raise UsageError("no CA rotation to finish: run etcd-deploy certs rotate-ca first")


def _rotate_ca_dry_run(ctx: RunContext, *, finish: bool) -> int:
    """The steps `certs rotate-ca` (or its --finish) would take from the current stage, and
    the order of the members' restarts."""
    ctx.pki.require_ca()
    stage = ctx.pki.rotation_stage
    if finish:
        _require_rotation_to_finish(ctx)
        describe = "trust only the new CA (restart)"
    else:
        if stage == "":
            ctx.ui.print("[rotate-ca] would make a new CA; every member would trust old and new")
        describe = "trust old and new CA (restart)"
    hosts = list(ctx.inv.hosts)
    if finish or stage in ("", "begun"):
        roll(ctx, hosts, lambda _h, _m: None, phase="rotate-ca", describe=describe, dry_run=True)
    if not finish:
        ctx.ui.print(
            "[rotate-ca] would then sign with the new CA, re-issue and push every leaf cert "
            "(no restart), and prove each member serves its new certs"
        )
    return 0


def run_rotate_ca(ctx: RunContext, *, finish: bool, dry_run: bool = False) -> int:
    inv = ctx.inv
    pki = ctx.pki
    if dry_run:
        return _rotate_ca_dry_run(ctx, finish=finish)
    ctx.lock_state(new_owner("certs rotate-ca"))
    pki.require_ca()
    names = [h.name for h in inv.hosts]
    with locked_hosts(ctx, "certs rotate-ca", names, files=ca_facts(ctx, names)) as facts:
        check_ca(ctx, facts, created_now=False)
        wait_healthy(ctx.client(), timeout=60)
        if finish:
            _require_rotation_to_finish(ctx)
            pki.end_ca_rotation()
            _roll_out_trust(ctx, "trust only the new CA (restart)")
            ctx.reset_client()
            wait_healthy(ctx.client(), timeout=60)
            ctx.ui.info("done", "the old CA is gone from every member")
            return 0
        if pki.rotation_stage == "":
            pki.begin_ca_rotation(inv.cluster.ca_days)
            ctx.ui.info("rotate-ca", "new CA made; every member will trust old and new")
        if pki.rotation_stage == "begun":
            ctx.reset_client()
            _roll_out_trust(ctx, "trust old and new CA (restart)")
            pki.switch_to_next_ca()
            ctx.ui.info("rotate-ca", "the new CA now signs; re-issuing every certificate")
        issued = {
            h.name: pki.ensure_host_certs(inv, h, renew_within_days=inv.cluster.renew_within_days)
            for h in inv.hosts
        }
        _push(ctx, issued)
        pki.ensure_client_cert(inv.cluster.cert_days)
        ctx.reset_client()
        for host in inv.hosts:
            prove_served(
                ctx,
                host,
                {k: cert_info(issued[host.name][k].cert_pem).sha256 for k in ("server", "peer")},
            )
        wait_healthy(ctx.client(), timeout=60)
    ctx.ui.print(
        f"Every member now serves certs of the new CA and trusts old and new.\n"
        f"For Kubernetes: give kube-apiserver the bundle {pki.bundle_path} as --etcd-cafile and "
        f"its new client cert and key from {pki.pki_dir}/<host>/apiserver-etcd-client.*, now.\n"
        "Then drop the old CA: etcd-deploy certs rotate-ca --finish"
    )
    return 0
