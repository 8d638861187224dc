"""Membership calls made safe: each with a timeout, then a fresh member list, then a retry
only when the list shows the call did not take effect (REFERENCE.md section 2)."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.adapters.etcd_api import EtcdApiError, EtcdClient
from orchestrator.core.cluster_view import ClusterView, Member
from orchestrator.core.errors import ClusterUnhealthy
from orchestrator.engine.polling import Backoff

RETRY_FOR = 30.0  # seconds a transient answer is retried


def _retry_after(backoff: Backoff, what: str, exc: EtcdApiError) -> None:
    """Pause before retrying a transient answer; raise for any other, or past the deadline."""
    if not exc.transient or not backoff.pause():
        raise ClusterUnhealthy(f"{what} failed: {exc.reason}") from None


def add_learner(client: EtcdClient, peer_url: str) -> Member:
    """Add `peer_url` as a learner; if a retry finds it already added, return that member."""
    backoff = Backoff(RETRY_FOR)
    while True:
        try:
            return client.add_learner([peer_url])
        except EtcdApiError as exc:
            try:
                existing = next((m for m in client.members() if peer_url in m.peer_urls), None)
            except EtcdApiError:
                existing = None
            if existing is not None:
                return existing
            _retry_after(backoff, f"member add {peer_url}", exc)


def promote(client: EtcdClient, member_id: int, *, timeout: float = 120) -> None:
    """Promote a learner as soon as etcd says it is in sync (bounded)."""
    backoff = Backoff(timeout)
    while True:
        try:
            client.promote(member_id)
            return
        except EtcdApiError as exc:
            try:
                member = next((m for m in client.members() if m.id == member_id), None)
            except EtcdApiError:
                member = None
            if member is not None and not member.is_learner:
                return  # an earlier call took effect
            if member is None and not exc.unreachable:
                raise ClusterUnhealthy(f"member {member_id:x} is gone; cannot promote") from None
            _retry_after(backoff, f"promote of member {member_id:x}", exc)


def remove(client: EtcdClient, member_id: int, *, timeout: float = RETRY_FOR) -> None:
    """Remove a member; done when the member list no longer holds its ID."""
    backoff = Backoff(timeout)
    while True:
        try:
            client.remove(member_id)
        except EtcdApiError as exc:
            try:
                gone = all(m.id != member_id for m in client.members())
            except EtcdApiError:
                gone = False
            if gone:
                return
            _retry_after(backoff, f"member remove {member_id:x}", exc)
            continue
        return


def hand_over_leadership(
    client: EtcdClient, view: ClusterView, leader: Member, log: Callable[[str, str, str], None]
) -> Member | None:
    """Move leadership from `leader` to a healthy voter; the new leader, or None if none moved."""
    phase = f"leader {leader.name}"
    target = next(
        (m for m in view.voters if m.id != leader.id and view.is_healthy_member(m.id)), None
    )
    if target is None or not leader.client_urls:
        log("warn", phase, "no healthy follower to take over leadership")
        return None
    try:
        client.move_leader(leader.client_urls[0], target.id)
    except EtcdApiError as exc:
        log("warn", phase, f"leadership transfer to {target.name} failed: {exc.reason}")
        return None
    log("info", phase, f"leadership handed to {target.name}")
    return target


def wait_removed(
    client: EtcdClient, member_id: int, endpoints: list[str], *, timeout: float = 60
) -> None:
    """Wait until the member list no longer holds `member_id` and the rest have a leader."""
    backoff = Backoff(timeout)
    while True:
        try:
            members = client.members(endpoints)
            if all(m.id != member_id for m in members):
                for endpoint in endpoints:
                    try:
                        if client.status(endpoint, timeout=2).leader_id:
                            return
                    except EtcdApiError:
                        continue
        except EtcdApiError:
            pass
        if not backoff.pause():
            raise ClusterUnhealthy(
                f"member {member_id:x} still listed, or no leader, "
                f"{timeout:.0f} s after its removal"
            )
