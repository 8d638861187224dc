"""What each leaf certificate must be, and whether the one on this machine is kept or
re-issued, and why (pure: no files, no clock; `now` is passed in).

`adapters.pki` reads the leaves (`LeafSeen`) and issues them; `judge_leaf` is the one rule
behind `up`'s reuse of valid certs and the `certs renew` / `certs rotate-ca` planners.
A leaf is kept when both its files are there and parse, it is signed by the CA that signs
now, its key matches, its subject, extended key usages and SAN sets are what its profile
wants, and it is not inside the renewal window (`renew_window_days`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.core.inventory import Host
from orchestrator.core.render import HOST_CERT_KINDS

MASTERS_ORG = "system:masters"
DEFAULT_RENEW_WITHIN_DAYS = 30  # renewal window of this machine's own client cert (and a default)
SERVER_AUTH = "1.3.6.1.5.5.7.3.1"  # extended key usage OIDs, dotted
CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
SERVED_KINDS = ("server", "peer")  # what a member serves on its client and peer ports
CLIENT_KINDS = ("etcdctl-etcd-client", "apiserver-etcd-client")


@dataclass(frozen=True)
class LeafProfile:
    """What a leaf must carry: subject, whether it may serve, its SANs."""

    cn: str
    orgs: tuple[str, ...]
    server_auth: bool
    dns: frozenset[str]
    ips: frozenset[str]

    @property
    def usages(self) -> tuple[str, ...]:
        """serverAuth+clientAuth for server/peer (etcd's gateway dials itself), else
        clientAuth."""
        return (SERVER_AUTH, CLIENT_AUTH) if self.server_auth else (CLIENT_AUTH,)


CLIENT_PROFILE = LeafProfile("etcd-deploy", (MASTERS_ORG,), False, frozenset(), frozenset())


def classify(value: str) -> tuple[str, str]:
    """("ip", canonical) for an IP address literal, else ("dns", lower-cased name)."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return "ip", str(ipaddress.ip_address(text))
    except ValueError:
        return "dns", text.lower()


def _split(values: Iterable[str]) -> tuple[set[str], set[str]]:
    dns: set[str] = set()
    ips: set[str] = set()
    for v in values:
        kind, canon = classify(v)
        (ips if kind == "ip" else dns).add(canon)
    return dns, ips


def wanted_sans(host: Host, kind: str) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses) the `kind` cert of `host` must carry, as strings.

    server: host name, localhost, etcd_address, 127.0.0.1, ::1, extra SANs.
    peer:   host name, etcd_address, extra SANs.  Client kinds: none.
    `host.extra_sans` already merges the cluster's and the host's extra SANs.
    """
    if kind == "server":
        return _split(
            [host.name, "localhost", host.etcd_address, "127.0.0.1", "::1", *host.extra_sans]
        )
    if kind == "peer":
        return _split([host.name, host.etcd_address, *host.extra_sans])
    if kind in CLIENT_KINDS:
        return set(), set()
    raise ValueError(f"unknown certificate kind {kind!r}; expected one of {HOST_CERT_KINDS}")


def leaf_profile(host: Host, kind: str) -> LeafProfile:
    """The profile of `host`'s `kind` cert."""
    dns, ips = wanted_sans(host, kind)
    if kind in SERVED_KINDS:
        return LeafProfile(host.name, (), True, frozenset(dns), frozenset(ips))
    suffix = "etcdctl" if kind == "etcdctl-etcd-client" else "apiserver-etcd-client"
    return LeafProfile(f"{host.name}-{suffix}", (MASTERS_ORG,), False, frozenset(), frozenset())


@dataclass(frozen=True)
class LeafSeen:
    """A leaf cert and its key as read on this machine (by `adapters.pki`), not judged."""

    present: bool = True  # both files are there
    unreadable: str = ""  # why they do not parse (the error's class), "" when they do
    by_current_ca: bool = True  # signed directly by the CA that signs now
    key_matches: bool = True
    subject_cn: tuple[str, ...] = ()
    subject_o: tuple[str, ...] = ()
    usages: tuple[str, ...] = ()  # extended key usage OIDs, dotted, in the cert's order
    dns_sans: frozenset[str] = frozenset()
    ip_sans: frozenset[str] = frozenset()
    not_after: dt.datetime | None = None  # timezone-aware UTC


def renew_window_days(renew_within_days: float, cert_days: float) -> float:
    """Days-left threshold below which a leaf is re-issued: min(renew_within, cert_days/2)."""
    return min(renew_within_days, cert_days / 2)


def fmt_days(days: float) -> str:
    return f"{days:.0f}" if abs(days) >= 2 else f"{days:.1f}"


def days_left(seen: LeafSeen, now: dt.datetime) -> float:
    assert seen.not_after is not None, "a leaf that was read has an expiry"
    return (seen.not_after - now).total_seconds() / 86400


def san_diff(have: tuple[set[str], set[str]], want: tuple[frozenset[str], frozenset[str]]) -> str:
    parts: list[str] = []
    for label, h, w in (("DNS", have[0], want[0]), ("IP", have[1], want[1])):
        parts += [f"+{label} {v}" for v in sorted(w - h)]
        parts += [f"-{label} {v}" for v in sorted(h - w)]
    return ", ".join(parts)


def _unfit(seen: LeafSeen, profile: LeafProfile) -> str:
    """Why the leaf cannot be kept whatever its expiry ("" when it can)."""
    if not seen.present:
        return "new"
    if seen.unreadable:
        return f"existing files unreadable ({seen.unreadable})"
    if not seen.by_current_ca:
        return "not signed by current CA"
    if not seen.key_matches:
        return "key does not match certificate"
    if seen.subject_cn != (profile.cn,) or seen.subject_o != profile.orgs:
        return "subject changed"
    if seen.usages != profile.usages:
        return "extended key usage changed"
    have = (set(seen.dns_sans), set(seen.ip_sans))
    if have != (set(profile.dns), set(profile.ips)):
        return f"SANs changed ({san_diff(have, (profile.dns, profile.ips))})"
    return ""


def judge_leaf(
    seen: LeafSeen, profile: LeafProfile, window: float, now: dt.datetime
) -> tuple[bool, str]:
    """(keep?, why) for a leaf read on this machine against what `profile` wants, renewed
    when fewer than `window` days are left at `now`."""
    unfit = _unfit(seen, profile)
    if unfit:
        return False, unfit
    left = days_left(seen, now)
    assert seen.not_after is not None
    if left <= 0:
        return False, f"expired on {seen.not_after:%Y-%m-%d}"
    if left < window:
        return False, f"expires in {fmt_days(left)} days (renew window {fmt_days(window)})"
    sans = "SANs match" if profile.dns or profile.ips else "no SANs"
    return True, f"valid until {seen.not_after:%Y-%m-%d}, {sans}"
