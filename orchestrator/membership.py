"""Membership calls made safe: each with a timeout, then a fresh member list, then a retry
only when the list shows the call did not take effect (REFERENCE.md section 2)."""

from __future__ import annotations

import time

from orchestrator.errors import ClusterUnhealthy
from orchestrator.etcd_api import EtcdApiError, EtcdClient, Member

RETRY_FOR = 30.0  # seconds a transient answer is retried


def _backoff(deadline: float, delay: float, what: str, exc: EtcdApiError) -> float:
    if not exc.transient or time.monotonic() + delay > deadline:
        raise ClusterUnhealthy(f"{what} failed: {exc.reason}") from None
    time.sleep(delay)
    return min(delay * 1.5, 1.0)


def add_learner(client: EtcdClient, peer_url: str) -> Member:
    """Add `peer_url` as a learner; if a retry finds it already added, return that member."""
    deadline = time.monotonic() + RETRY_FOR
    delay = 0.1
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
            delay = _backoff(deadline, delay, f"member add {peer_url}", exc)


def promote(client: EtcdClient, member_id: int, *, timeout: float = 120) -> None:
    """Promote a learner as soon as etcd says it is in sync (bounded)."""
    deadline = time.monotonic() + timeout
    delay = 0.1
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
            delay = _backoff(deadline, delay, f"promote of member {member_id:x}", exc)


def remove(client: EtcdClient, member_id: int, *, timeout: float = RETRY_FOR) -> None:
    """Remove a member; done when the member list no longer holds its ID."""
    deadline = time.monotonic() + timeout
    delay = 0.1
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
            delay = _backoff(deadline, delay, f"member remove {member_id:x}", exc)
            continue
        return
