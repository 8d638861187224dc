"""Whose folder is it? The marker etcd-deploy leaves in every folder it owns on a host,
and the pure rules that decide, from a host's facts, what a run may adopt or remove.

A marker is a small file, `<folder>/.etcd-deploy`, naming the cluster and the id of its
state dir (made once, with the CA). A folder is ours when its marker names this cluster;
another cluster's when it names another; unmarked otherwise. An unmarked folder is
adopted only when it is empty (`lost+found` alone counts as empty: mount points are
normal) or holds nothing but what etcd-deploy itself writes there; anything else is
somebody's data and is never re-owned, moved or removed without --force.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.core.host_paths import ENV_NAME, ETCDCTL_ENV_NAME, PKI_NAME

MARKER_NAME = ".etcd-deploy"
# Inside a data dir that is a mount point: what `up --force` moved aside, and a restore
# being prepared (see operations.aside_lines and the restore script).
ASIDE_PREFIX = ".etcd-deploy-aside-"
RESTORE_PREFIX = ".etcd-deploy-restore-"
# A file on its way in (see operations.place_files_lines): ours, whatever cut it short.
STAGED_SUFFIX = ".etcd-deploy-new"


def ignored_entry(name: str) -> bool:
    """Entries that say nothing about whose a folder is: a file system's lost+found, and
    etcd-deploy's own marker, moved-aside and restore folders."""
    return (
        name in ("lost+found", MARKER_NAME)
        or name.startswith((ASIDE_PREFIX, RESTORE_PREFIX))
        or name.endswith(STAGED_SUFFIX)
    )


_MARKER = re.compile(r"etcd-deploy cluster=(?P<name>\S+) id=(?P<id>\S+)")


@dataclass(frozen=True)
class Marker:
    cluster: str
    cluster_id: str

    def render(self) -> str:
        return f"etcd-deploy cluster={self.cluster} id={self.cluster_id}\n"


def parse_marker(text: str) -> Marker | None:
    """The marker in `text`, or None when it is not one of ours (or was cut short)."""
    match = _MARKER.fullmatch(text.strip())
    return Marker(match["name"], match["id"]) if match else None


@dataclass(frozen=True)
class DirFacts:
    """One folder on a host, as the facts command saw it."""

    exists: bool = False
    marker: str | None = None  # the marker file's text; None when there is none
    entries: tuple[str, ...] = ()  # names in it, lost+found and the marker left out
    mount_point: bool = False
    link: str = ""  # where the folder points when it is a symlink ("" when it is not)

    @property
    def empty(self) -> bool:
        return not self.entries


@dataclass(frozen=True)
class Ownership:
    """The verdict on one folder: `ours`, `adoptable`, `foreign` (another cluster's
    marker), `unknown` (somebody's files) or `link` (a symlink: never followed), and why."""

    state: str
    reason: str = ""

    @property
    def may_write(self) -> bool:
        return self.state in ("ours", "adoptable")

    @property
    def may_remove(self) -> bool:
        return self.state == "ours"


@dataclass(frozen=True)
class FolderRule:
    """What an unmarked folder may hold and still be adopted (besides nothing at all)."""

    key: str  # the inventory key naming the folder, for messages
    known_entries: frozenset[str] = field(default_factory=frozenset)


# What etcd-deploy writes in the config dir besides pki/ (removed by name on teardown).
CONFIG_FILES = (ENV_NAME, ETCDCTL_ENV_NAME, MARKER_NAME)
DATA_RULE = FolderRule("cluster.data_dir")
# etcd.env is another tool's as often as ours (etcdadm's layout): proven by its content.
CONFIG_RULE = FolderRule("cluster.config_dir", frozenset({*CONFIG_FILES, PKI_NAME} - {ENV_NAME}))
ETCD_DATA = frozenset({"member"})
OUR_ENV = frozenset({ENV_NAME})


def judge(
    folder: str,
    facts: DirFacts,
    rule: FolderRule,
    ours: Marker,
    *,
    proven: frozenset[str] = frozenset(),
) -> Ownership:
    """May this run write into / remove `folder`? `proven`: entries the caller proved to be
    this cluster's (etcd data of one of its members, an etcd.env of ours)."""
    if facts.link:
        return Ownership(
            "link",
            f"{folder} ({rule.key}) is a symlink to {facts.link}: set {rule.key} to the "
            "folder itself",
        )
    if not facts.exists:
        return Ownership("adoptable", "does not exist yet")
    if facts.marker is not None:
        marker = parse_marker(facts.marker)
        if marker is None:
            return Ownership("unknown", f"{folder}/{MARKER_NAME} is not a marker of etcd-deploy")
        if marker.cluster != ours.cluster:
            return Ownership("foreign", f"{folder} belongs to cluster {marker.cluster!r}")
        if ours.cluster_id and marker.cluster_id != ours.cluster_id:
            return Ownership(
                "foreign",
                f"{folder} belongs to another cluster named {marker.cluster!r} "
                f"(id {marker.cluster_id}, this state dir's is {ours.cluster_id})",
            )
        return Ownership("ours", "marked as this cluster's")
    if facts.empty:
        return Ownership("adoptable", "empty")
    unknown = sorted(set(facts.entries) - rule.known_entries - proven)
    if not unknown:
        return Ownership("adoptable", "holds only what etcd-deploy writes")
    shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
    return Ownership(
        "unknown",
        f"{folder} ({rule.key}) is not empty and carries no etcd-deploy marker (it holds {shown})",
    )


def ca_trust(trusted: set[str], known: set[str]) -> str:
    """Whose CA a host trusts, from the fingerprints in its CA file (`trusted`) and those of
    every CA this state dir has held (`known`): "none" (no CA file), "unknown" (no local CA
    to compare with), "ours" (they share a certificate; CA bundles count) or "foreign"."""
    if not trusted:
        return "none"
    if not known:
        return "unknown"
    return "ours" if trusted & known else "foreign"


def foreign_ca_hosts(holds: Mapping[str, bool], trust: Mapping[str, str]) -> list[str]:
    """Hosts holding a cluster (`holds`: data, or etcd running) whose CA file shares no
    certificate with the state dir's CAs (`trust`: host -> `ca_trust` verdict); with no CA
    in the state dir at all ("unknown"), theirs is none of ours either."""
    return [n for n, held in holds.items() if held and trust.get(n) in ("foreign", "unknown")]


def ca_refusal(
    holds: Mapping[str, bool],
    trust: Mapping[str, str],
    *,
    created_now: bool,
    pki_dir: str,
    state_dir: str,
    data_checked: bool = False,
) -> str:
    """Why a run must stop before it changes anything ("" when it need not): every host
    that holds a cluster trusts none of the state dir's CAs, so the state dir was lost (a
    CA made again) or is another cluster's, and certs from our CA would cut the members off
    from each other. When only some do, those hold another cluster's data: refused too,
    unless the caller's own data checks handle them (`data_checked`: `up`, whose --force
    moves such data aside)."""
    foreign = foreign_ca_hosts(holds, trust)
    if not foreign:
        return ""
    holding = [n for n, held in holds.items() if held]
    names = ", ".join(foreign)
    if len(foreign) < len(holding):
        if data_checked:
            return ""
        return (
            f"hosts {names} hold data of a cluster that trusts another CA (the others trust "
            "this state dir's CA); etcd-deploy up --force moves that data aside"
        )
    why = f"there was no CA in {pki_dir}" if created_now else f"none of the CAs in {pki_dir} is it"
    return (
        f"hosts {names} hold a cluster that trusts another CA, and {why}: restore the state "
        f"dir ({state_dir}) from its backup"
    )


def is_our_token(cluster: str, token: str) -> bool:
    """etcd-deploy's cluster tokens: `<cluster>-<12 hex>` (made by `up` and `restore`)."""
    return re.fullmatch(rf"{re.escape(cluster)}-[0-9a-f]{{12}}", token) is not None


def env_is_ours(cluster: str, host_name: str, env: dict[str, str]) -> bool:
    """An etcd.env that this cluster's etcd-deploy wrote for this host."""
    token = env.get("ETCD_INITIAL_CLUSTER_TOKEN", "")
    return env.get("ETCD_NAME") == host_name and is_our_token(cluster, token)


@dataclass(frozen=True)
class HostIdentity:
    """What a host says about whose etcd it holds, read from its facts."""

    holds_cluster: bool  # etcd data or a running etcd
    env: dict[str, str]  # its etcd.env (empty when there is none)
    ca: str  # "ours", "foreign", "none" (no CA file), "unknown" (no local CA to compare)
    data: Ownership
    config: Ownership
    links: tuple[str, ...] = ()  # files read for this verdict that are symlinks


def identity_problems(cluster: str, host_name: str, peer_url: str, who: HostIdentity) -> list[str]:
    """Why this host may hold something that is not this inventory's member (empty: it is
    ours, or holds nothing). Read before anything is stopped, moved or removed: an etcd
    that nothing on the host proves to be this cluster's (our marker on its data, or a CA
    of this state dir) is somebody else's."""
    # An unmarked data dir is only kept by a teardown; a config dir is emptied by name.
    problems = [o.reason for o in (who.data, who.config) if o.state in ("foreign", "link")]
    if who.config.state == "unknown":
        problems.append(who.config.reason)
    problems += [f"{path} is a symlink" for path in who.links]
    if who.ca == "foreign" and who.holds_cluster:
        problems.append("its etcd trusts another CA than this state dir's")
    elif who.holds_cluster and who.data.state != "ours" and who.ca != "ours":
        problems.append(
            "it holds etcd (data or a running etcd) that nothing proves to be this cluster's "
            "(no marker of it on the data dir, no CA of this state dir)"
        )
    token = who.env.get("ETCD_INITIAL_CLUSTER_TOKEN")
    if token is not None and not is_our_token(cluster, token):
        problems.append(f"its etcd.env names cluster token {token!r}, not one of {cluster!r}")
    name = who.env.get("ETCD_NAME")
    if name is not None and name != host_name:
        problems.append(f"its etcd.env names member {name!r}, not {host_name!r}")
    advertised = who.env.get("ETCD_INITIAL_ADVERTISE_PEER_URLS")
    if advertised is not None and peer_url not in advertised.split(","):
        problems.append(f"its member advertises {advertised}, the inventory says {peer_url}")
    return problems
