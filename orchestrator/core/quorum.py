"""Quorum arithmetic and the safety rules for membership changes (pure).

Counts are of *voting* members; learners are passed separately. etcd commits a membership
change only with a quorum of the current voters, and one change at a time.
"""

from __future__ import annotations

from dataclasses import dataclass


def quorum_size(n: int) -> int:
    """Voters needed for a majority of `n` members: floor(n/2) + 1."""
    if n < 1:
        raise ValueError(f"a cluster has at least 1 member, got {n}")
    return n // 2 + 1


def failure_tolerance(n: int) -> int:
    """Members that may fail while `n` members keep quorum: floor((n-1)/2)."""
    if n < 1:
        raise ValueError(f"a cluster has at least 1 member, got {n}")
    return (n - 1) // 2


@dataclass(frozen=True)
class Verdict:
    """Outcome of a safety check. `rule` is a stable identifier; `detail` is for humans."""

    allowed: bool
    rule: str
    detail: str


def _check_counts(members: int, healthy: int) -> None:
    if members < 0 or healthy < 0 or healthy > members:
        raise ValueError(f"inconsistent counts: members={members}, healthy={healthy}")


def _numbers(members: int, healthy: int) -> str:
    q = quorum_size(members) if members else 0
    return f"members={members}, healthy={healthy}, quorum={q}"


def check_add(members: int, healthy: int, learners_pending: int) -> Verdict:
    """May one member be added (as a learner) now?

    Requires every voting member healthy and no learner still waiting for promotion.
    """
    _check_counts(members, healthy)
    if learners_pending < 0:
        raise ValueError(f"learners_pending must be >= 0, got {learners_pending}")
    nums = _numbers(members, healthy)
    if members < 1:
        return Verdict(False, "no-cluster", f"{nums}: nothing to join; bootstrap the cluster first")
    if learners_pending:
        return Verdict(
            False,
            "one-learner-at-a-time",
            f"{nums}, learners pending={learners_pending}: promote or remove the pending "
            "learner before adding another member",
        )
    if healthy < members:
        return Verdict(
            False,
            "healthy-before-change",
            f"{nums}: {members - healthy} member(s) unhealthy; membership changes only on a "
            "healthy cluster. Repair them, or replace a dead member by removing it first "
            "and then adding the new one",
        )
    after = members + 1
    note = ""
    if after % 2 == 0:
        note = (
            f"; {after} members tolerate {failure_tolerance(after)} failure(s), "
            f"no more than {members}: plan an odd size"
        )
    return Verdict(
        True,
        "ok",
        f"{nums}: after the add members={after}, quorum={quorum_size(after)}{note}",
    )


def check_remove(members: int, healthy: int, target_healthy: bool, force: bool) -> Verdict:
    """May one member (healthy or not, per `target_healthy`) be removed now?

    Refused when it would remove the last member, when the cluster has no quorum now (the
    change could not commit), when going from 2 members to 1 without `force`, or when the
    remaining healthy members would be fewer than the quorum of the smaller cluster.
    `force` only overrides the 2 -> 1 rule.
    """
    _check_counts(members, healthy)
    nums = _numbers(members, healthy)
    if members <= 1:
        return Verdict(
            False,
            "last-member",
            f"{nums}: cannot remove the last member; destroy the cluster instead",
        )
    if healthy < quorum_size(members):
        return Verdict(
            False,
            "no-quorum",
            f"{nums}: the cluster has lost quorum, so a membership change cannot commit; "
            "bring members back, or restore from a snapshot",
        )
    if members == 2 and not force:
        return Verdict(
            False,
            "two-to-one",
            f"{nums}: removing a member from a 2-member cluster is unsafe (the change needs "
            "both members, and a failure during it leaves the cluster without quorum); "
            "add a member first, or pass --force",
        )
    after = members - 1
    # Inconsistent inputs (target "unhealthy" while every member counts as healthy) are
    # resolved toward safety: the removal then costs one healthy member.
    left = healthy - 1 if target_healthy else min(healthy, after)
    q_after = quorum_size(after)
    if left < q_after:
        return Verdict(
            False,
            "quorum-after-remove",
            f"{nums}: removing a healthy member leaves healthy={left} of members={after}, "
            f"below quorum={q_after}; repair the unhealthy members first, or remove an "
            "unhealthy one instead",
        )
    return Verdict(
        True,
        "ok",
        f"{nums}: after the removal members={after}, healthy={left}, quorum={q_after}, "
        f"tolerates {failure_tolerance(after)} failure(s)",
    )
