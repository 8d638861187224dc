"""Local CA and leaf certificates: contents, validity, reuse rules, file modes."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    DNSName,
    ExtensionPolicy,
    IPAddress,
    PolicyBuilder,
    Store,
)

from orchestrator.adapters import pki
from orchestrator.adapters.pki import (
    HOST_CERT_KINDS,
    LocalPKI,
    cert_info,
    desired_sans,
    renew_window_days,
)
from orchestrator.core.errors import PreflightError
from orchestrator.core.inventory import Cluster, Host, Inventory, SSHSettings
from orchestrator.core.versions import Version

CLIENT_KINDS = ("etcdctl-etcd-client", "apiserver-etcd-client")


def make_host(
    name: str = "etcd-1",
    etcd_address: str = "10.0.0.1",
    extra_sans: tuple[str, ...] = (),
) -> Host:
    return Host(
        name=name,
        address=etcd_address,
        etcd_address=etcd_address,
        ssh_port=22,
        ssh_user="root",
        extra_sans=extra_sans,
    )


def make_inv(state_dir: Path, *hosts: Host, cert_days: int = 365) -> Inventory:
    cluster = Cluster(
        name="prod", etcd_version=Version(3, 5, 17), state_dir=state_dir, cert_days=cert_days
    )
    return Inventory(
        path=state_dir / "inventory.toml",
        cluster=cluster,
        ssh=SSHSettings(),
        hosts=hosts or (make_host(),),
    )


@pytest.fixture
def local_pki(tmp_path: Path) -> LocalPKI:
    p = LocalPKI(tmp_path / "state", "prod")
    assert p.ensure_ca(3650) is True
    return p


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- CA


def test_ca_contents(local_pki: LocalPKI) -> None:
    ca = load(local_pki.ca_cert_pem())
    info = cert_info(local_pki.ca_cert_pem())
    assert info.subject_cn == info.issuer_cn == "prod-etcd-ca"
    assert info.is_ca
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign and not ku.digital_signature
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA256)
    assert 3649.9 < local_pki.ca_days_left() <= 3650
    assert info.not_before < dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4)


def test_ca_files_modes(local_pki: LocalPKI) -> None:
    assert local_pki.ca_cert_path == local_pki.pki_dir / "ca.crt"
    assert local_pki.ca_key_path == local_pki.pki_dir / "ca.key"
    assert mode(local_pki.ca_key_path) == 0o600
    assert mode(local_pki.pki_dir) == 0o700
    assert not [p for p in local_pki.pki_dir.iterdir() if p.name.endswith(".tmp")]


def test_ca_is_never_regenerated(local_pki: LocalPKI) -> None:
    before = local_pki.ca_cert_path.read_bytes(), local_pki.ca_key_path.read_bytes()
    again = LocalPKI(local_pki.state_dir, "prod")
    assert again.ensure_ca(3650) is False
    assert again.ensure_ca(10) is False
    assert (again.ca_cert_path.read_bytes(), again.ca_key_path.read_bytes()) == before


def test_ca_with_missing_key_is_refused_not_replaced(local_pki: LocalPKI) -> None:
    cert = local_pki.ca_cert_path.read_bytes()
    local_pki.ca_key_path.unlink()
    with pytest.raises(PreflightError, match=r"ca\.key is missing"):
        LocalPKI(local_pki.state_dir, "prod").ensure_ca(3650)
    assert local_pki.ca_cert_path.read_bytes() == cert


def test_ca_key_not_matching_cert_is_refused(local_pki: LocalPKI, tmp_path: Path) -> None:
    other = LocalPKI(tmp_path / "other", "prod")
    other.ensure_ca(3650)
    local_pki.ca_key_path.write_bytes(other.ca_key_path.read_bytes())
    with pytest.raises(PreflightError, match="does not belong"):
        LocalPKI(local_pki.state_dir, "prod").ensure_ca(3650)


def test_leaf_before_ca_is_an_error(tmp_path: Path) -> None:
    inv = make_inv(tmp_path)
    with pytest.raises(PreflightError, match=r"no CA in .*etcd-deploy up. makes it"):
        LocalPKI(tmp_path, "prod").ensure_host_certs(inv, inv.hosts[0])


# --------------------------------------------------------------------------- SANs


def test_desired_sans_ipv4_with_extras(tmp_path: Path) -> None:
    host = make_host(extra_sans=("10.0.0.100", "ETCD.example.com", "*.etcd.example.com"))
    inv = make_inv(tmp_path, host)
    dns, ips = desired_sans(inv, host, "server")
    assert dns == {"etcd-1", "localhost", "etcd.example.com", "*.etcd.example.com"}
    assert ips == {"10.0.0.1", "127.0.0.1", "::1", "10.0.0.100"}
    dns, ips = desired_sans(inv, host, "peer")
    assert dns == {"etcd-1", "etcd.example.com", "*.etcd.example.com"}
    assert ips == {"10.0.0.1", "10.0.0.100"}
    for kind in CLIENT_KINDS:
        assert desired_sans(inv, host, kind) == (set(), set())


def test_desired_sans_ipv6_and_dns_addresses(tmp_path: Path) -> None:
    v6 = make_host(etcd_address="FD00:0:0::1")
    inv = make_inv(tmp_path, v6)
    assert desired_sans(inv, v6, "peer") == ({"etcd-1"}, {"fd00::1"})
    named = make_host(etcd_address="etcd-1.example.com")
    dns, ips = desired_sans(inv, named, "server")
    assert dns == {"etcd-1", "localhost", "etcd-1.example.com"}
    assert ips == {"127.0.0.1", "::1"}


def test_desired_sans_unknown_kind(tmp_path: Path) -> None:
    inv = make_inv(tmp_path)
    with pytest.raises(ValueError, match="unknown certificate kind"):
        desired_sans(inv, inv.hosts[0], "etcd-deploy-client")


# --------------------------------------------------------------------------- leaves


def test_server_and_peer_certs(local_pki: LocalPKI, tmp_path: Path) -> None:
    host = make_host(extra_sans=("10.0.0.100", "etcd.example.com"))
    inv = make_inv(tmp_path, host)
    issued = local_pki.ensure_host_certs(inv, host)
    assert list(issued) == list(HOST_CERT_KINDS)
    for kind in ("server", "peer"):
        cert = load(issued[kind].cert_pem)
        info = cert_info(issued[kind].cert_pem)
        assert info.subject_cn == "etcd-1"
        assert info.subject_o == ()
        assert info.issuer_cn == "prod-etcd-ca"
        assert not info.is_ca
        dns, ips = desired_sans(inv, host, kind)
        assert set(info.dns_sans) == dns and set(info.ip_sans) == ips
        assert ekus(cert) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.digital_signature and not ku.key_cert_sign
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ca_ski = load(local_pki.ca_cert_pem()).extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        )
        assert aki.key_identifier == ca_ski.value.digest
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_client_certs(local_pki: LocalPKI, tmp_path: Path) -> None:
    inv = make_inv(tmp_path)
    issued = local_pki.ensure_host_certs(inv, inv.hosts[0])
    expected_cn = {
        "etcdctl-etcd-client": "etcd-1-etcdctl",
        "apiserver-etcd-client": "etcd-1-apiserver-etcd-client",
    }
    for kind in CLIENT_KINDS:
        cert = load(issued[kind].cert_pem)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == expected_cn[kind]
        assert [
            a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        ] == ["system:masters"]
        assert ekus(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        info = cert_info(issued[kind].cert_pem)
        assert info.dns_sans == () and info.ip_sans == ()


def test_control_machine_client_cert(local_pki: LocalPKI) -> None:
    crt, key = local_pki.ensure_client_cert(365)
    assert crt == local_pki.pki_dir / "etcd-deploy-client.crt"
    assert key == local_pki.pki_dir / "etcd-deploy-client.key"
    assert mode(key) == 0o600
    cert = load(crt.read_bytes())
    info = cert_info(crt.read_bytes())
    assert info.subject_cn == "etcd-deploy" and info.subject_o == ("system:masters",)
    assert ekus(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    before = crt.read_bytes()
    local_pki.ensure_client_cert(365)
    assert crt.read_bytes() == before  # reused


def test_chain_verifies_against_the_ca(local_pki: LocalPKI, tmp_path: Path) -> None:
    inv = make_inv(tmp_path)
    issued = local_pki.ensure_host_certs(inv, inv.hosts[0])
    store = Store([load(local_pki.ca_cert_pem())])
    server = load(issued["server"].cert_pem)
    for name in (
        DNSName("etcd-1"),
        DNSName("localhost"),
        IPAddress(ipaddress.ip_address("10.0.0.1")),
        IPAddress(ipaddress.ip_address("127.0.0.1")),
        IPAddress(ipaddress.ip_address("::1")),
    ):
        PolicyBuilder().store(store).build_server_verifier(name).verify(server, [])
    # Client certs carry no SAN (Go does not need one); allow that in the client policy.
    ee = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    verifier = (
        PolicyBuilder()
        .store(store)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
        .build_client_verifier()
    )
    for kind in HOST_CERT_KINDS:
        verifier.verify(load(issued[kind].cert_pem), [])


def test_validity_and_clock_skew(local_pki: LocalPKI, tmp_path: Path) -> None:
    inv = make_inv(tmp_path, cert_days=1)
    now = dt.datetime.now(dt.UTC)
    issued = local_pki.ensure_host_certs(inv, inv.hosts[0])
    for item in issued.values():
        info = cert_info(item.cert_pem)
        assert abs((info.not_after - now) - dt.timedelta(days=1)) < dt.timedelta(minutes=1)
        assert abs((now - info.not_before) - dt.timedelta(minutes=5)) < dt.timedelta(minutes=1)
        assert 0.99 < info.days_left <= 1.0


def test_short_validity_is_not_reissued_every_run(local_pki: LocalPKI, tmp_path: Path) -> None:
    inv = make_inv(tmp_path, cert_days=1)
    local_pki.ensure_host_certs(inv, inv.hosts[0], renew_within_days=30)
    again = local_pki.ensure_host_certs(inv, inv.hosts[0], renew_within_days=30)
    assert not any(item.changed for item in again.values())
    assert renew_window_days(30, 1) == 0.5
    assert renew_window_days(30, 365) == 30


def test_key_and_cert_files(local_pki: LocalPKI, tmp_path: Path) -> None:
    inv = make_inv(tmp_path)
    issued = local_pki.ensure_host_certs(inv, inv.hosts[0])
    host_dir = local_pki.pki_dir / "etcd-1"
    assert mode(host_dir) == 0o700
    for kind, item in issued.items():
        crt, key = local_pki.host_cert_paths("etcd-1", kind)
        assert (crt, key) == (host_dir / f"{kind}.crt", host_dir / f"{kind}.key")
        assert mode(key) == 0o600
        assert crt.read_bytes() == item.cert_pem and key.read_bytes() == item.key_pem
        assert b"BEGIN PRIVATE KEY" in item.key_pem
    assert not [p for p in host_dir.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- reuse rules


def test_second_run_reuses(local_pki: LocalPKI, tmp_path: Path) -> None:
    inv = make_inv(tmp_path)
    first = local_pki.ensure_host_certs(inv, inv.hosts[0])
    assert all(i.changed and i.reason == "issued: new" for i in first.values())
    second = local_pki.ensure_host_certs(inv, inv.hosts[0])
    for kind, item in second.items():
        assert not item.changed
        assert item.cert_pem == first[kind].cert_pem and item.key_pem == first[kind].key_pem
        assert item.reason.startswith("reused: valid until ")
    assert second["server"].reason.endswith(", SANs match")


def test_san_change_reissues_only_certs_with_sans(local_pki: LocalPKI, tmp_path: Path) -> None:
    host = make_host()
    inv = make_inv(tmp_path, host)
    first = local_pki.ensure_host_certs(inv, host)
    grown = make_host(extra_sans=("10.0.0.5",))
    second = local_pki.ensure_host_certs(make_inv(tmp_path, grown), grown)
    for kind in ("server", "peer"):
        assert second[kind].changed
        assert second[kind].reason == "issued: SANs changed (+IP 10.0.0.5)"
        assert second[kind].key_pem != first[kind].key_pem  # fresh key
    for kind in CLIENT_KINDS:
        assert not second[kind].changed
    third = local_pki.ensure_host_certs(inv, host)
    assert third["peer"].reason == "issued: SANs changed (-IP 10.0.0.5)"


def test_expiring_cert_is_renewed(local_pki: LocalPKI, tmp_path: Path) -> None:
    host = make_host()
    local_pki.ensure_host_certs(make_inv(tmp_path, host, cert_days=10), host)
    renewed = local_pki.ensure_host_certs(make_inv(tmp_path, host, cert_days=365), host)
    for item in renewed.values():
        assert item.changed
        assert item.reason == "issued: expires in 10 days (renew window 30)"
        assert cert_info(item.cert_pem).days_left > 364


def test_expired_cert_is_renewed(
    local_pki: LocalPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = make_inv(tmp_path)
    real_now = pki._now
    monkeypatch.setattr(pki, "_now", lambda: real_now() - dt.timedelta(days=400))
    local_pki.ensure_host_certs(inv, inv.hosts[0])
    monkeypatch.setattr(pki, "_now", real_now)
    renewed = local_pki.ensure_host_certs(inv, inv.hosts[0])
    assert all(i.changed and i.reason.startswith("issued: expired on ") for i in renewed.values())


def test_new_ca_reissues_everything(local_pki: LocalPKI, tmp_path: Path) -> None:
    inv = make_inv(tmp_path)
    local_pki.ensure_host_certs(inv, inv.hosts[0])
    local_pki.ca_cert_path.unlink()
    local_pki.ca_key_path.unlink()
    fresh = LocalPKI(local_pki.state_dir, "prod")
    assert fresh.ensure_ca(3650) is True
    again = fresh.ensure_host_certs(inv, inv.hosts[0])
    assert all(i.changed and i.reason == "issued: not signed by current CA" for i in again.values())
    load(again["server"].cert_pem).verify_directly_issued_by(load(fresh.ca_cert_pem()))


def test_mismatched_key_is_reissued(local_pki: LocalPKI, tmp_path: Path) -> None:
    inv = make_inv(tmp_path)
    first = local_pki.ensure_host_certs(inv, inv.hosts[0])
    _, server_key = local_pki.host_cert_paths("etcd-1", "server")
    server_key.write_bytes(first["peer"].key_pem)
    again = local_pki.ensure_host_certs(inv, inv.hosts[0])
    assert again["server"].reason == "issued: key does not match certificate"
    assert not again["peer"].changed


def test_force_reissues(local_pki: LocalPKI, tmp_path: Path) -> None:
    inv = make_inv(tmp_path)
    first = local_pki.ensure_host_certs(inv, inv.hosts[0])
    forced = local_pki.ensure_host_certs(inv, inv.hosts[0], force=True)
    for kind, item in forced.items():
        assert item.changed and item.reason == "issued: forced"
        assert item.key_pem != first[kind].key_pem


def test_cert_info_fingerprint(local_pki: LocalPKI, tmp_path: Path) -> None:
    inv = make_inv(tmp_path, make_host(etcd_address="fd00::1"))
    pem = local_pki.ensure_host_certs(inv, inv.hosts[0])["server"].cert_pem
    info = cert_info(pem)
    assert info.sha256 == load(pem).fingerprint(hashes.SHA256()).hex()
    assert info.ip_sans == ("127.0.0.1", "::1", "fd00::1")
    assert info.dns_sans == ("etcd-1", "localhost")
