"""The cluster as its members answered: members, their status, errors and alarms, and the
questions every planner asks of it (who leads, who is healthy, which member is this host).
Pure data: `orchestrator.engine.cluster` observes it through etcd's API."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Member:
    id: int
    name: str  # empty for a member that was added but never started
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool

    @property
    def started(self) -> bool:
        return bool(self.name) and bool(self.client_urls)


@dataclass(frozen=True)
class MemberStatus:
    endpoint: str
    member_id: int
    leader_id: int
    version: str
    db_size: int
    db_size_in_use: int
    raft_term: int
    raft_index: int
    raft_applied_index: int
    revision: int
    is_learner: bool
    errors: tuple[str, ...]
    cluster_id: int


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
        out = [f"{member_label(self, i)}: {why}" for i, why in self.errors.items()]
        out += [
            f"{member_label(self, i)}: not answering"
            for i in (m.id for m in self.members)
            if i not in self.statuses and i not in self.errors
        ]
        if self.statuses and self.leader_id is None:
            out.append("no agreed leader")
        out += [f"alarm {kind} on {member_label(self, i)}" for i, kind in self.alarms]
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


def member_label(view: ClusterView, member_id: int) -> str:
    member = next((m for m in view.members if m.id == member_id), None)
    return (member.name or f"{member_id:x} (not started)") if member else f"{member_id:x}"
