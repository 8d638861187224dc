"""The cluster as seen through etcd's API: one observation of every member, and the health
gate every change waits on."""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor

from orchestrator.adapters.etcd_api import EtcdApiError, EtcdClient
from orchestrator.core.cluster_view import ClusterView, Member
from orchestrator.core.errors import ClusterUnhealthy
from orchestrator.engine.polling import Backoff


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
