"""`status`: one row per inventory host (and per member the inventory does not know).

Reads only etcd's API and the local certs. SSH only when etcd's API goes through it
(`ssh.etcd_api`: behind a jump host, or when a member's port is closed to this machine), so
a row says "down" only when etcd itself does not answer on its host.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from orchestrator.adapters.etcd_api import EtcdApiError
from orchestrator.adapters.pki import cert_info
from orchestrator.commands.backup import host_backups, schedule_installed
from orchestrator.core.cluster_view import ClusterView
from orchestrator.core.errors import EtcdPortBlocked
from orchestrator.core.units import human_size
from orchestrator.engine.cluster import observe
from orchestrator.engine.context import RunContext


@dataclass
class MemberRow:
    name: str
    address: str
    id: str
    role: str  # leader | follower | learner | down | not a member | unknown
    version: str
    db_size: int
    db_in_use: int
    raft_term: int
    raft_index: int
    health: str
    alarms: str
    cert_days_left: float | None
    last_backup: str | None = None  # newest scheduled backup on the host (UTC), if scheduled


def _cert_days(ctx: RunContext, host_name: str) -> float | None:
    days = []
    for kind in ("server", "peer"):
        path, _ = ctx.pki.host_cert_paths(host_name, kind)
        if path.exists():
            days.append(cert_info(path.read_bytes()).days_left)
    return round(min(days), 1) if days else None


def collect(ctx: RunContext) -> tuple[list[MemberRow], bool, str]:
    """Rows, whether the cluster is healthy, and a one-line summary."""
    blocked = ""
    try:
        view: ClusterView | None = observe(ctx.client())
    except EtcdApiError as exc:
        view = None
        reason = exc.reason
    except EtcdPortBlocked as exc:  # ssh.etcd_api = "direct" and a port closed to us
        view, reason, blocked = None, str(exc), str(exc)
    rows = []
    known_urls = set()
    for host in ctx.inv.hosts:
        url = ctx.inv.peer_url(host)
        known_urls.add(url)
        member = view.by_peer_url(url) if view else None
        rows.append(_row(view, member, host.name, host.etcd_address, _cert_days(ctx, host.name)))
    if view:
        for member in view.members:
            if not known_urls.intersection(member.peer_urls):
                rows.append(
                    _row(view, member, member.name or "?", ",".join(member.peer_urls), None)
                )
    if schedule_installed(ctx):
        newest: dict[str, str] = {}
        for backup in host_backups(ctx)[0]:  # newest first
            newest.setdefault(backup.where, backup.taken_at.strftime("%Y-%m-%d %H:%M:%S"))
        for row in rows:
            row.last_backup = newest.get(row.name, "none")
    if blocked:
        for row in rows:
            row.role, row.health = "unknown", "unreachable from this machine"
        return rows, False, blocked
    if view is None:
        return rows, False, f"no member answers ({reason})"
    healthy = view.healthy and all(r.role != "not a member" for r in rows)
    problems = view.problems() + [
        f"{r.name}: not a member" for r in rows if r.role == "not a member"
    ]
    summary = (
        f"{len(view.voters)} voting members, {view.healthy_voters} healthy, "
        f"leader {_name_of(view, view.leader_id)}"
    )
    if problems:
        summary += "; " + "; ".join(problems)
    return rows, healthy, summary


def _name_of(view: ClusterView, member_id: int | None) -> str:
    member = next((m for m in view.members if m.id == member_id), None)
    return member.name if member else "none"


def _row(
    view: ClusterView | None,
    member,
    name: str,
    address: str,  # type: ignore[no-untyped-def]
    cert_days: float | None,
) -> MemberRow:
    row = MemberRow(name, address, "", "down", "", 0, 0, 0, 0, "unreachable", "", cert_days)
    if view is None:
        return row
    if member is None:
        row.role, row.health = "not a member", "-"
        return row
    row.id = f"{member.id:x}"
    status = view.statuses.get(member.id)
    row.alarms = ",".join(kind for i, kind in view.alarms if i == member.id)
    if status is None:
        row.health = view.errors.get(member.id, "unreachable")
        return row
    row.role = (
        "learner"
        if member.is_learner
        else "leader"
        if status.member_id == view.leader_id
        else "follower"
    )
    row.version = status.version
    row.db_size, row.db_in_use = status.db_size, status.db_size_in_use
    row.raft_term, row.raft_index = status.raft_term, status.raft_index
    row.health = "healthy" if view.is_healthy_member(member.id) else view.errors[member.id]
    return row


def show(ctx: RunContext, *, as_json: bool) -> bool:
    rows, healthy, summary = collect(ctx)
    if as_json:
        ctx.ui.print_json(
            {
                "cluster": ctx.inv.cluster.name,
                "healthy": healthy,
                "summary": summary,
                "members": [asdict(r) for r in rows],
            }
        )
        return healthy
    columns = [
        "NAME",
        "ADDRESS",
        "ID",
        "ROLE",
        "VERSION",
        "DB SIZE",
        "IN USE",
        "TERM",
        "INDEX",
        "HEALTH",
        "ALARMS",
        "CERT DAYS",
    ]
    table = [
        [
            r.name,
            r.address,
            r.id,
            r.role,
            r.version,
            human_size(r.db_size) if r.version else "",
            human_size(r.db_in_use) if r.version else "",
            str(r.raft_term or ""),
            str(r.raft_index or ""),
            r.health,
            r.alarms,
            "" if r.cert_days_left is None else f"{r.cert_days_left:g}",
        ]
        for r in rows
    ]
    if any(r.last_backup is not None for r in rows):
        columns.append("LAST BACKUP (UTC)")
        for line, r in zip(table, rows, strict=True):
            line.append(r.last_backup or "")
    styles = [None if r.health == "healthy" else "red" for r in rows]
    ctx.ui.table(
        f"cluster {ctx.inv.cluster.name}: {'healthy' if healthy else 'DEGRADED'}",
        columns,
        table,
        styles,
    )
    ctx.ui.print(summary)
    return healthy
