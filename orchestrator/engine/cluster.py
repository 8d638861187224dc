"""The cluster as seen through etcd's API: one observation of every member, and the health
gate every change waits on."""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from orchestrator.adapters.etcd_api import EtcdApiError, EtcdClient, Member, MemberStatus
from orchestrator.core.errors import ClusterUnhealthy
from orchestrator.engine.polling import Backoff


@dataclass
class ClusterView:
    members: list[Member]
    statuses: dict[int, MemberStatus] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)  # member id -> why it is not healthy
    alarms: list[tuple[int, str]] = field(default_factory=list)
    tolerated_alarms: frozenset[str] = frozenset()

    @property
    def voters(self) -> list[Member]:
        return [m for m in self.members if not m.is_learner]

    @property
    def learners(self) -> list[Member]:
        return [m for m in self.members if m.is_learner]

    @property
    def leader_id(self) -> int | None:
        """The leader every answering member agrees on, or None."""
        return self.leader_ignoring(())

    def leader_ignoring(self, ignore: Collection[int]) -> int | None:
        leaders = {s.leader_id for i, s in self.statuses.items() if i not in ignore}
        return leaders.pop() if len(leaders) == 1 and 0 not in leaders else None

    def is_healthy_member(self, member_id: int) -> bool:
        return member_id in self.statuses and member_id not in self.errors

    @property
    def healthy_voters(self) -> int:
        return sum(1 for m in self.voters if self.is_healthy_member(m.id))

    @property
    def healthy(self) -> bool:
        return self.healthy_ignoring(())

    def healthy_ignoring(self, ignore: Collection[int]) -> bool:
        """Healthy, leaving out `ignore` (a joining member that is not up yet) and the alarms
        the view was told to tolerate."""
        return (
            self.leader_ignoring(ignore) is not None
            and all(kind in self.tolerated_alarms for _, kind in self.alarms)
            and all(self.is_healthy_member(m.id) for m in self.members if m.id not in ignore)
        )

    def problems(self) -> list[str]:
        out = [f"{_label(self, i)}: {why}" for i, why in self.errors.items()]
        out += [
            f"{_label(self, i)}: not answering"
            for i in (m.id for m in self.members)
            if i not in self.statuses and i not in self.errors
        ]
        if self.statuses and self.leader_id is None:
            out.append("no agreed leader")
        out += [f"alarm {kind} on {_label(self, i)}" for i, kind in self.alarms]
        return out

    def by_peer_url(self, url: str) -> Member | None:
        return next((m for m in self.members if url in m.peer_urls), None)

    def match_host(self, name: str, peer_url: str) -> tuple[Member | None, str]:
        """The member that is this inventory host, matched by name and peer URL, or None
        with "" when neither matches; a member matched by one and not the other (an edited
        address, a renamed host) is a problem, said in the second value."""
        by_url = self.by_peer_url(peer_url)
        by_name = next((m for m in self.members if name and m.name == name), None)
        if by_url is not None and by_name is not None and by_url.id != by_name.id:
            return None, (
                f"member {by_url.name or f'{by_url.id:x}'} has {name}'s peer URL {peer_url}, "
                f"and another member ({by_name.id:x}) is named {name}"
            )
        if by_url is None and by_name is not None:
            return None, (
                f"member {name} ({by_name.id:x}) has peer URL {', '.join(by_name.peer_urls)}, "
                f"but the inventory says {peer_url} (was etcd_address or peer_port edited?)"
            )
        if by_url is not None and by_url.name and by_url.name != name:
            return None, f"{name}'s peer URL {peer_url} belongs to member {by_url.name}"
        return by_url, ""


def _label(view: ClusterView, member_id: int) -> str:
    member = next((m for m in view.members if m.id == member_id), None)
    return (member.name or f"{member_id:x} (not started)") if member else f"{member_id:x}"


def observe(
    client: EtcdClient, endpoints: list[str] | None = None, tolerate: Collection[str] = ()
) -> ClusterView:
    """Members (from any answering endpoint), then status and health of each, in parallel.

    `tolerate`: alarm kinds that do not make the cluster unhealthy (defrag is there to clear
    NOSPACE, and etcd's /health fails with "ALARM NOSPACE" while it is raised)."""
    members = client.members(endpoints)
    view = ClusterView(members, tolerated_alarms=frozenset(tolerate))

    def probe(member: Member) -> None:
        if not member.client_urls:
            view.errors[member.id] = "added but never started"
            return
        endpoint = member.client_urls[0]
        try:
            view.statuses[member.id] = client.status(endpoint, timeout=3)
        except EtcdApiError as exc:
            view.errors[member.id] = exc.reason
            return
        status = view.statuses[member.id]
        # A raised alarm shows in each member's status errors too ("... alarm:NOSPACE").
        errors = [e for e in status.errors if not any(kind in e for kind in tolerate)]
        if errors:
            view.errors[member.id] = "; ".join(errors)
        elif not member.is_learner:
            ok, reason = client.health(endpoint, timeout=3)
            if not ok and not any(reason == f"ALARM {kind}" for kind in tolerate):
                view.errors[member.id] = f"unhealthy: {reason}"

    with ThreadPoolExecutor(max_workers=max(1, len(members))) as pool:
        list(pool.map(probe, members))
    with contextlib.suppress(EtcdApiError):
        view.alarms = client.alarms([m.client_urls[0] for m in members if m.client_urls])
    return view


def wait_healthy(
    client: EtcdClient,
    *,
    timeout: float = 60,
    ignore: Collection[int] = (),
    endpoints: list[str] | None = None,
    ignore_unstarted: bool = False,
    tolerate: Collection[str] = (),
) -> ClusterView:
    """Poll with short backoff until the cluster is healthy (members in `ignore` aside, and
    with `ignore_unstarted` those that never started; alarms in `tolerate` aside)."""
    backoff = Backoff(timeout)
    last: ClusterView | None = None
    last_error = ""
    while True:
        try:
            last = observe(client, endpoints, tolerate)
            unstarted = {m.id for m in last.members if not m.started} if ignore_unstarted else set()
            if last.healthy_ignoring(set(ignore) | unstarted):
                return last
        except EtcdApiError as exc:
            last_error = str(exc)
        if not backoff.pause():
            detail = "; ".join(last.problems()) if last else last_error
            raise ClusterUnhealthy(f"cluster not healthy after {timeout:.0f} s: {detail}")
