"""The cluster's local certificate authority and the certificates it issues.

Everything happens on the control machine: the CA key never leaves `<state_dir>/pki`.
Keys are ECDSA P-256 (generated in milliseconds, small, accepted by etcd/Go and by
Kubernetes), signatures SHA-256.

Layout under `<state_dir>/pki` (folders 0700, keys 0600, all writes atomic):
    ca.crt, ca.key
    <host>/{server,peer,etcdctl-etcd-client,apiserver-etcd-client}.{crt,key}
    etcd-deploy-client.{crt,key}      # the tool's own client cert for etcd's API

Reuse rule (pure, `core.cert_rules.judge_leaf`; the `certs` planners judge with it too, from
`read_host_certs`): an existing leaf is kept when it is signed by the current CA, its key
matches, its subject and extended key usages are as expected, its SAN sets equal the desired
sets exactly, and it is not inside the renewal window; otherwise it is re-issued with a
fresh key.
The renewal window is `min(renew_within_days, cert_days / 2)` days, so a short validity
(cert_days=1 in tests) is not re-issued on every run: a leaf is renewed when its days left
fall below that window. Renewed leaves need no etcd restart
(etcd re-reads cert files on each TLS handshake). The CA is never regenerated.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orchestrator.adapters.localfs import fsync_dir, write_atomic
from orchestrator.adapters.state_dir import CLUSTER_ID_FILE, PKI_DIR
from orchestrator.core.cert_rules import (
    CLIENT_PROFILE,
    DEFAULT_RENEW_WITHIN_DAYS,
    LeafProfile,
    LeafSeen,
    judge_leaf,
    leaf_profile,
    renew_window_days,
    wanted_sans,
)
from orchestrator.core.errors import PreflightError
from orchestrator.core.render import HOST_CERT_KINDS

if TYPE_CHECKING:
    from orchestrator.core.inventory import Host, Inventory

CLIENT_CERT_NAME = "etcd-deploy-client"
CLOCK_SKEW = dt.timedelta(minutes=5)
CA_WARN_DAYS = 90  # callers warn when ca_days_left() drops below this

# The CA key: ours is ECDSA; an RSA CA (e.g. taken over from etcdadm) can sign too.
CAKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


# --------------------------------------------------------------------------- inspection


@dataclass(frozen=True)
class CertInfo:
    subject_cn: str
    subject_o: tuple[str, ...]
    issuer_cn: str
    not_before: dt.datetime  # timezone-aware UTC
    not_after: dt.datetime
    days_left: float  # vs now; negative once expired
    dns_sans: tuple[str, ...]  # sorted
    ip_sans: tuple[str, ...]  # sorted, canonical text form
    is_ca: bool
    sha256: str  # lowercase hex fingerprint of the DER certificate
    serial: int


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    dns = {n.lower() for n in ext.get_values_for_type(x509.DNSName)}
    ips = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return dns, ips


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _info(cert: x509.Certificate) -> CertInfo:
    dns, ips = _sans(cert)
    cn = _attr(cert.subject, NameOID.COMMON_NAME)
    issuer_cn = _attr(cert.issuer, NameOID.COMMON_NAME)
    not_after = cert.not_valid_after_utc
    return CertInfo(
        subject_cn=cn[0] if cn else "",
        subject_o=tuple(_attr(cert.subject, NameOID.ORGANIZATION_NAME)),
        issuer_cn=issuer_cn[0] if issuer_cn else "",
        not_before=cert.not_valid_before_utc,
        not_after=not_after,
        days_left=(not_after - _now()).total_seconds() / 86400,
        dns_sans=tuple(sorted(dns)),
        ip_sans=tuple(sorted(ips, key=lambda s: (ipaddress.ip_address(s).version, s))),
        is_ca=_is_ca(cert),
        sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        serial=cert.serial_number,
    )


def cert_info(pem: bytes) -> CertInfo:
    """Summary of a PEM certificate (the first one if `pem` is a bundle)."""
    return _info(x509.load_pem_x509_certificate(pem))


def pem_fingerprints(pem: bytes) -> set[str]:
    """sha256 (of the DER) of every certificate in a PEM file or bundle; empty if none parses."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return set()
    return {hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest() for c in certs}


# --------------------------------------------------------------------------- desired state


def desired_sans(inv: Inventory, host: Host, kind: str) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses) the `kind` cert of `host` must carry, as strings
    (`cert_rules.wanted_sans`)."""
    del inv  # the inventory is part of the contract; today only the host matters
    return wanted_sans(host, kind)


def _host_profile(inv: Inventory, host: Host, kind: str) -> LeafProfile:
    del inv
    return leaf_profile(host, kind)


# --------------------------------------------------------------------------- issuing


@dataclass(frozen=True)
class IssuedCert:
    kind: str
    cert_pem: bytes
    key_pem: bytes
    changed: bool  # True when a new cert and key were written now
    reason: str  # "reused: ..." or "issued: ..."


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _name(cn: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    days: float,
    *,
    ca: bool,
) -> x509.CertificateBuilder:
    """Subject, issuer, key, a random serial, the validity (from CLOCK_SKEW ago), and what
    the key may do (critical): a CA's signs certs and CRLs (no CA below it), a leaf's signs
    only (ECDSA: key encipherment is meaningless)."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def _make_ca(cluster_name: str, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = _name(f"{cluster_name}-etcd-ca")
    cert = (
        _builder(name, name, key, days, ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _ekus(profile: LeafProfile) -> list[x509.ObjectIdentifier]:
    """serverAuth+clientAuth for server/peer (etcd's gateway dials itself), else clientAuth."""
    if profile.server_auth:
        return [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return [ExtendedKeyUsageOID.CLIENT_AUTH]


def _make_leaf(
    profile: LeafProfile,
    days: float,
    ca_cert: x509.Certificate,
    ca_key: CAKey,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    builder = (
        _builder(_name(profile.cn, profile.orgs), ca_cert.subject, key, days, ca=False)
        .add_extension(x509.ExtendedKeyUsage(_ekus(profile)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in sorted(profile.dns)]
    names += [
        x509.IPAddress(ipaddress.ip_address(i))
        for i in sorted(profile.ips, key=lambda s: (ipaddress.ip_address(s).version, s))
    ]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _read_leaf(cert_path: Path, key_path: Path, ca_cert: x509.Certificate) -> LeafSeen:
    """The leaf at cert_path/key_path as it is (`cert_rules.judge_leaf` judges it)."""
    if not cert_path.exists() or not key_path.exists():
        return LeafSeen(present=False)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        try:
            cert.verify_directly_issued_by(ca_cert)
            by_current_ca = True
        except (ValueError, TypeError, InvalidSignature):
            by_current_ca = False
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = x509.ExtendedKeyUsage([])
        dns, ips = _sans(cert)
        return LeafSeen(
            by_current_ca=by_current_ca,
            key_matches=_spki(key.public_key()) == _spki(cert.public_key()),
            subject_cn=tuple(_attr(cert.subject, NameOID.COMMON_NAME)),
            subject_o=tuple(_attr(cert.subject, NameOID.ORGANIZATION_NAME)),
            usages=tuple(u.dotted_string for u in usages),
            dns_sans=frozenset(dns),
            ip_sans=frozenset(ips),
            not_after=cert.not_valid_after_utc,
        )
    except (ValueError, TypeError, OSError) as exc:
        return LeafSeen(unreadable=exc.__class__.__name__)


def _judge(
    cert_path: Path,
    key_path: Path,
    profile: LeafProfile,
    ca_cert: x509.Certificate,
    window: float,
) -> tuple[bool, str]:
    """(reuse?, reason) for the leaf at cert_path/key_path against the desired profile."""
    reuse, why = judge_leaf(_read_leaf(cert_path, key_path, ca_cert), profile, window, _now())
    return reuse, ("reused: " if reuse else "issued: ") + why


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


class LocalPKI:
    """The cluster CA and every certificate it issued, under `<state_dir>/pki`."""

    def __init__(self, state_dir: Path, cluster_name: str) -> None:
        self.state_dir = Path(state_dir)
        self.cluster_name = cluster_name
        self.pki_dir = self.state_dir / PKI_DIR
        self._ca: tuple[x509.Certificate, CAKey] | None = None

    @property
    def ca_cert_path(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.pki_dir / "ca.key"

    def host_dir(self, host_name: str) -> Path:
        return self.pki_dir / host_name

    def host_cert_paths(self, host_name: str, kind: str) -> tuple[Path, Path]:
        """(cert, key) local paths of one host certificate."""
        d = self.host_dir(host_name)
        return d / f"{kind}.crt", d / f"{kind}.key"

    # ---------------------------------------------------------------- CA

    def ensure_ca(self, days: int) -> bool:
        """Create the CA unless it exists. True if created now. Never replaces a CA."""
        crt, key = self.ca_cert_path.exists(), self.ca_key_path.exists()
        if crt and key:
            self._load_ca()
            return False
        if crt or key:
            present, missing = self.ca_cert_path, self.ca_key_path
            if key:
                present, missing = missing, present
            raise PreflightError(
                f"{present} exists but {missing} is missing; restore it from a backup of the "
                "state folder. A new CA is not created because every member trusts the old one."
            )
        _private_dir(self.pki_dir)
        cert, ca_key = _make_ca(self.cluster_name, days)
        write_atomic(self.ca_key_path, _key_pem(ca_key), 0o600)
        write_atomic(self.ca_cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        self._ca = (cert, ca_key)
        return True

    def cluster_id(self, *, create: bool) -> str:
        """The state dir's id (`<state_dir>/cluster-id`), which the ownership markers on the
        hosts carry; made when missing and `create`, else "" when missing."""
        path = self.state_dir / CLUSTER_ID_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            if not create:
                return ""
        new = secrets.token_hex(8)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, (new + "\n").encode(), 0o600)
        return new

    def require_ca(self) -> None:
        """For commands that use a cluster but never make one: its CA must be here already
        (a new CA would be trusted by no member, and made without the state lock)."""
        self._load_ca()

    def _load_ca(self) -> tuple[x509.Certificate, CAKey]:
        if self._ca is not None:
            return self._ca
        if not self.ca_cert_path.exists() or not self.ca_key_path.exists():
            raise PreflightError(
                f"no CA in {self.pki_dir}: `etcd-deploy up` makes it; for a cluster that "
                "exists, restore the state dir from its backup"
            )
        try:
            cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
        except ValueError as exc:
            raise PreflightError(f"cannot read the CA in {self.pki_dir}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise PreflightError(f"{self.ca_key_path}: expected an ECDSA or RSA key")
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise PreflightError(f"{self.ca_key_path} does not belong to {self.ca_cert_path}")
        if not _is_ca(cert):
            raise PreflightError(f"{self.ca_cert_path} is not a CA certificate")
        with contextlib.suppress(OSError):
            if self.ca_key_path.stat().st_mode & 0o077:
                os.chmod(self.ca_key_path, 0o600)
        self._ca = (cert, key)
        return self._ca

    def ca_cert_pem(self) -> bytes:
        return self._load_ca()[0].public_bytes(serialization.Encoding.PEM)

    def ca_days_left(self) -> float:
        """Days until the CA expires (warn below CA_WARN_DAYS; `certs rotate-ca` replaces it)."""
        return _info(self._load_ca()[0]).days_left

    # ---------------------------------------------------------------- CA rotation
    #
    # 1. begin: a new CA is made as ca-next.*, and ca-bundle.crt = old CA + new CA; the hosts
    #    get the bundle as their ca.crt (every member trusts both).
    # 2. switch: ca.* -> ca-previous.*, ca-next.* -> ca.*; leaves are then re-issued from the
    #    new CA because they are "not signed by current CA".
    # 3. end: the bundle goes; hosts trust the new CA alone.

    @property
    def next_ca_cert_path(self) -> Path:
        return self.pki_dir / "ca-next.crt"

    @property
    def next_ca_key_path(self) -> Path:
        return self.pki_dir / "ca-next.key"

    @property
    def bundle_path(self) -> Path:
        return self.pki_dir / "ca-bundle.crt"

    @property
    def rotation_stage(self) -> str:
        """ "" (none), "begun" (new CA made, not yet signing) or "switched" (new CA signs)."""
        if self.next_ca_cert_path.exists():
            return "begun"
        if self.bundle_path.exists():
            return "switched"
        return ""

    def trust_path(self) -> Path:
        """The CA file to trust now: the bundle during a rotation, else the CA."""
        return self.bundle_path if self.bundle_path.exists() else self.ca_cert_path

    def trust_pem(self) -> bytes:
        return self.trust_path().read_bytes()

    def known_ca_fingerprints(self) -> set[str]:
        """Every CA this state dir has held or is about to use: current, next, previous.
        A host that trusts none of them belongs to a cluster this state dir did not make."""
        names = (self.ca_cert_path, self.next_ca_cert_path, self.pki_dir / "ca-previous.crt")
        return {fp for path in names if path.exists() for fp in pem_fingerprints(path.read_bytes())}

    def begin_ca_rotation(self, days: int) -> bool:
        """Make the next CA (unless made already) and the old+new bundle. True if made now."""
        self._load_ca()
        made = False
        if not self.next_ca_cert_path.exists():
            cert, key = _make_ca(self.cluster_name, days)
            write_atomic(self.next_ca_key_path, _key_pem(key), 0o600)
            write_atomic(
                self.next_ca_cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644
            )
            made = True
        bundle = self.ca_cert_path.read_bytes() + self.next_ca_cert_path.read_bytes()
        write_atomic(self.bundle_path, bundle, 0o644)
        return made

    def switch_to_next_ca(self) -> None:
        """The next CA becomes the CA; the old one is kept as ca-previous.*."""
        if not self.next_ca_cert_path.exists():
            raise PreflightError(f"no {self.next_ca_cert_path}: begin the CA rotation first")
        os.replace(self.ca_key_path, self.pki_dir / "ca-previous.key")
        os.replace(self.ca_cert_path, self.pki_dir / "ca-previous.crt")
        os.replace(self.next_ca_key_path, self.ca_key_path)
        os.replace(self.next_ca_cert_path, self.ca_cert_path)
        fsync_dir(self.pki_dir)
        self._ca = None

    def end_ca_rotation(self) -> None:
        self.bundle_path.unlink(missing_ok=True)

    # ---------------------------------------------------------------- leaves

    def _ensure_leaf(
        self,
        kind: str,
        cert_path: Path,
        key_path: Path,
        profile: LeafProfile,
        days: float,
        renew_within_days: float,
        force: bool,
    ) -> IssuedCert:
        ca_cert, _ = self._load_ca()
        window = renew_window_days(renew_within_days, days)
        reuse, reason = _judge(cert_path, key_path, profile, ca_cert, window)
        if reuse and not force:
            return IssuedCert(kind, cert_path.read_bytes(), key_path.read_bytes(), False, reason)
        return self._issue(
            kind, cert_path, key_path, profile, days, "issued: forced" if reuse else reason
        )

    def _issue(
        self,
        kind: str,
        cert_path: Path,
        key_path: Path,
        profile: LeafProfile,
        days: float,
        reason: str,
    ) -> IssuedCert:
        ca_cert, ca_key = self._load_ca()
        _private_dir(cert_path.parent)
        cert, key = _make_leaf(profile, days, ca_cert, ca_key)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = _key_pem(key)
        # Key first: a crash in between leaves a mismatched pair, re-issued next run.
        write_atomic(key_path, key_pem, 0o600)
        write_atomic(cert_path, cert_pem, 0o644)
        return IssuedCert(kind, cert_pem, key_pem, True, reason)

    def ensure_host_certs(
        self,
        inv: Inventory,
        host: Host,
        *,
        renew_within_days: int = DEFAULT_RENEW_WITHIN_DAYS,
        force: bool = False,
    ) -> dict[str, IssuedCert]:
        """Reuse or (re-)issue the four certs of `host`; see the module docstring."""
        days = inv.cluster.cert_days
        out: dict[str, IssuedCert] = {}
        for kind in HOST_CERT_KINDS:
            crt, key = self.host_cert_paths(host.name, kind)
            profile = _host_profile(inv, host, kind)
            out[kind] = self._ensure_leaf(kind, crt, key, profile, days, renew_within_days, force)
        return out

    def read_host_certs(self, host: Host) -> dict[str, LeafSeen]:
        """The four leaves of `host` as they are on this machine, against the CA that signs
        now (read only: `cert_rules.judge_leaf` judges them, `issue_host_cert` replaces one)."""
        ca_cert, _ = self._load_ca()
        return {
            kind: _read_leaf(*self.host_cert_paths(host.name, kind), ca_cert)
            for kind in HOST_CERT_KINDS
        }

    def read_client_cert(self) -> LeafSeen:
        """This machine's own client cert as it is (read only)."""
        return _read_leaf(self.client_cert_path, self.client_key_path, self._load_ca()[0])

    def issue_host_cert(self, inv: Inventory, host: Host, kind: str, reason: str) -> IssuedCert:
        """A new `kind` cert and key for `host`, from the CA that signs now, written here
        (whatever the old one was: the caller judged it)."""
        crt, key = self.host_cert_paths(host.name, kind)
        profile = _host_profile(inv, host, kind)
        return self._issue(kind, crt, key, profile, inv.cluster.cert_days, f"issued: {reason}")

    @property
    def client_cert_path(self) -> Path:
        return self.pki_dir / f"{CLIENT_CERT_NAME}.crt"

    @property
    def client_key_path(self) -> Path:
        return self.pki_dir / f"{CLIENT_CERT_NAME}.key"

    def ensure_client_cert(self, days: int) -> tuple[Path, Path]:
        """The control machine's own client cert (CN=etcd-deploy, O=system:masters)."""
        self._ensure_leaf(
            CLIENT_CERT_NAME,
            self.client_cert_path,
            self.client_key_path,
            CLIENT_PROFILE,
            days,
            DEFAULT_RENEW_WITHIN_DAYS,
            False,
        )
        return self.client_cert_path, self.client_key_path
