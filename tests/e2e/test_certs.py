"""Certificate lifecycle on real hosts: check, renew without restart, expired clusters,
CA rotation under load."""

from __future__ import annotations

import datetime as dt
import json
import ssl
from pathlib import Path

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from orchestrator.adapters.tls_probe import served_certificate
from orchestrator.core.render import HOST_CERT_KINDS
from tests.e2e.conftest import Cli, unit_started_at
from tests.e2e.load import DownSampler, Writer
from tests.lab.driver import HOSTS, Lab

THREE = ["etcd1", "etcd2", "etcd3"]
ENDPOINTS = [f"https://{HOSTS[n]}:2379" for n in THREE]


def _pki(cli: Cli) -> Path:
    return cli.inventory.parent / ".etcd-deploy" / "lab" / "pki"


def _check(cli: Cli) -> tuple[int, list[dict]]:
    proc = cli("certs", "check", "--json")
    return proc.returncode, json.loads(proc.stdout)["certificates"]


def _sign(
    ca_dir: Path,
    ca_name: str,
    template: x509.Certificate,
    *,
    not_after: dt.datetime,
    client: bool = False,
) -> tuple[bytes, bytes]:
    """A cert like `template` (subject, SANs) but signed by <ca_name> with its own validity."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / f"{ca_name}.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / f"{ca_name}.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(template.subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=3))
        .not_valid_after(not_after)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if not client:
        sans = template.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        builder = builder.add_extension(sans, critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_short_lived_certs_are_flagged_then_renewed_without_a_restart(make_cli, lab: Lab) -> None:
    cli = make_cli(3, extra="cert_days = 1\n")
    cli("up", check=True)
    code, rows = _check(cli)
    assert code == 7
    assert {r["kind"] for r in rows if "expires within" in r["problem"]} >= {"server", "peer"}
    started = {n: unit_started_at(lab, n) for n in THREE}
    cli.inventory.write_text(cli.inventory.read_text().replace("cert_days = 1\n", ""))
    before = {p: p.read_bytes() for p in _pki(cli).rglob("*") if p.is_file()}
    dry = cli("certs", "renew", "--within", "30", "--dry-run")
    assert dry.returncode == 10, dry.stderr
    issue = [line for line in dry.stdout.splitlines() if "] issue a new " in line]
    assert len(issue) == 12 and all("renew window 30" in line for line in issue), dry.stdout
    assert {p: p.read_bytes() for p in _pki(cli).rglob("*") if p.is_file()} == before
    with DownSampler(ENDPOINTS, _pki(cli)) as sampler:
        proc = cli("certs", "renew", "--within", "30")
    assert proc.returncode == 0, proc.stderr
    assert sampler.samples > 0 and sampler.most_down == 0  # no failed request meanwhile
    assert proc.stderr.count("serving the new certs") == 3, proc.stderr
    code, rows = _check(cli)
    assert code == 0, json.dumps([r for r in rows if r["problem"]])
    served = [r for r in rows if r["source"].startswith("served")]
    assert len(served) == 6 and all(364 < r["days_left"] <= 365 for r in served)
    assert {n: unit_started_at(lab, n) for n in THREE} == started


def test_a_cluster_whose_certs_expired_is_brought_back_by_renew(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    pki = _pki(cli)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)

    def expire(local: Path, *, client: bool) -> tuple[bytes, bytes]:
        template = x509.load_pem_x509_certificate(local.read_bytes())
        cert, key = _sign(pki, "ca", template, not_after=past, client=client)
        local.write_bytes(cert)
        local.with_suffix(".key").write_bytes(key)
        return cert, key

    for name in THREE:  # every leaf: server, peer, etcdctl's and the apiserver's client certs
        for kind in HOST_CERT_KINDS:
            cert, key = expire(pki / name / f"{kind}.crt", client=kind not in ("server", "peer"))
            for suffix, data in (("crt", cert), ("key", key)):
                lab.exec(name, f"cat > /etc/etcd/pki/{kind}.{suffix} <<'EOF'\n{data.decode()}EOF")
    expire(pki / "etcd-deploy-client.crt", client=True)  # the control machine's own
    for name in THREE:
        lab.exec(name, "systemctl restart --no-block etcd")
    assert cli("status").returncode == 6
    code, rows = _check(cli)
    assert code == 7 and any(r["problem"] == "EXPIRED" for r in rows)
    proc = cli("certs", "renew", "--within", "30")
    assert proc.returncode == 0, proc.stderr
    assert cli.status()["healthy"]
    assert _check(cli)[0] == 0
    for name in THREE:
        assert "is healthy" in lab.exec(name, "/opt/bin/etcdctl.sh endpoint health 2>&1").stdout


def test_rotate_ca_under_load_leaves_no_trace_of_the_old_ca(make_cli, lab: Lab, load_table) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    pki = _pki(cli)
    old_ca = (pki / "ca.crt").read_bytes()
    dry = cli("certs", "rotate-ca", "--dry-run")
    assert dry.returncode == 10, dry.stderr  # the plan changes something
    lines = dry.stdout.splitlines()
    steps = [line for line in lines if "] trust old and new CA (restart)" in line]
    assert len(steps) == 3 and "leadership handed over first" in steps[-1], dry.stdout
    assert all(line.startswith("[rotate-ca etcd") for line in steps), dry.stdout
    assert sum("issue a new" in line for line in lines) == 12, dry.stdout
    assert (pki / "ca.crt").read_bytes() == old_ca and not (pki / "ca-bundle.crt").exists()
    writer = Writer(ENDPOINTS, pki).start()
    try:
        first = cli("certs", "rotate-ca")
        assert first.returncode == 0, first.stderr
        assert "rotate-ca --finish" in first.stdout and (pki / "ca-bundle.crt").exists()
        finish = cli("certs", "rotate-ca", "--finish")
        assert finish.returncode == 0, finish.stderr
    finally:
        writer.stop()
    report = writer.verify(ENDPOINTS[0])
    load_table.add("certs rotate-ca (+ --finish)", report)
    assert report.acknowledged > 50 and report.lost == []
    new_ca = (pki / "ca.crt").read_bytes()
    assert new_ca != old_ca and (pki / "ca-previous.crt").read_bytes() == old_ca
    assert not (pki / "ca-bundle.crt").exists()
    for name in THREE:
        assert lab.exec(name, "cat /etc/etcd/pki/ca.crt").stdout.encode() == new_ca
    new = x509.load_pem_x509_certificate(new_ca)
    _, rows = _check(cli)
    for row in rows:
        assert not row["problem"], row
    for name in THREE:  # what each member serves verifies against the new CA only
        for port in (2379, 2380):
            pem = served_certificate(
                httpcore.SyncBackend(),
                HOSTS[name],
                port,
                client_cert=pki / "etcd-deploy-client.crt",
                client_key=pki / "etcd-deploy-client.key",
            )
            x509.load_pem_x509_certificate(pem).verify_directly_issued_by(new)
    # A client cert from the old CA is refused: no member trusts it any more.
    template = x509.load_pem_x509_certificate((pki / "etcd-deploy-client.crt").read_bytes())
    cert, key = _sign(
        pki,
        "ca-previous",
        template,
        not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
        client=True,
    )
    (cli.inventory.parent / "old.crt").write_bytes(cert)
    (cli.inventory.parent / "old.key").write_bytes(key)
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(
        str(cli.inventory.parent / "old.crt"), str(cli.inventory.parent / "old.key")
    )
    for endpoint in ENDPOINTS:
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{endpoint}/v3/maintenance/status", json={}, verify=context, timeout=5)


def test_certs_check_with_no_host_reachable_is_an_ssh_error(make_cli, lab: Lab) -> None:
    """Every host unreachable over SSH: one SSH error (exit 4), not a table of "problems"
    that tells the operator to renew certs that were never read."""
    cli = make_cli(1)
    assert cli("up").returncode == 0
    lab.exec("etcd1", "systemctl stop ssh.socket ssh.service")
    try:
        proc = cli("certs", "check")
    finally:
        lab.exec("etcd1", "systemctl start ssh.service")
    assert proc.returncode == 4, proc.stderr
    assert "problem(s)" not in proc.stdout and "certs renew" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "etcd1" in errors[0], proc.stderr
