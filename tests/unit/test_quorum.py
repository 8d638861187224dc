"""Quorum maths and the membership-change safety rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.quorum import (
    Verdict,
    check_add,
    check_remove,
    failure_tolerance,
    quorum_size,
)


@pytest.mark.parametrize(
    ("n", "quorum", "tolerance"),
    [(1, 1, 0), (2, 2, 0), (3, 2, 1), (4, 3, 1), (5, 3, 2), (6, 4, 2), (7, 4, 3)],
)
def test_quorum_table(n: int, quorum: int, tolerance: int) -> None:
    assert quorum_size(n) == quorum
    assert failure_tolerance(n) == tolerance


def test_quorum_rejects_empty_cluster() -> None:
    with pytest.raises(ValueError):
        quorum_size(0)
    with pytest.raises(ValueError):
        failure_tolerance(-1)


@given(st.integers(min_value=1, max_value=1000))
def test_quorum_properties(n: int) -> None:
    q = quorum_size(n)
    assert 2 * q > n  # a strict majority
    assert 2 * (q - 1) <= n  # the smallest one
    assert failure_tolerance(n) == n - q
    if n % 2:
        # adding a member to an odd cluster never improves tolerance
        assert failure_tolerance(n + 1) == failure_tolerance(n)


@pytest.mark.parametrize(
    ("members", "healthy", "learners", "allowed", "rule"),
    [
        (3, 3, 0, True, "ok"),
        (1, 1, 0, True, "ok"),
        (3, 2, 0, False, "healthy-before-change"),
        (5, 4, 0, False, "healthy-before-change"),
        (3, 3, 1, False, "one-learner-at-a-time"),
        (0, 0, 0, False, "no-cluster"),
    ],
)
def test_check_add_table(
    members: int, healthy: int, learners: int, allowed: bool, rule: str
) -> None:
    verdict = check_add(members, healthy, learners)
    assert (verdict.allowed, verdict.rule) == (allowed, rule)
    assert f"members={members}" in verdict.detail
    assert f"healthy={healthy}" in verdict.detail


def test_check_add_details() -> None:
    assert "quorum=3" in check_add(3, 3, 0).detail  # after the add: 4 members
    assert "odd size" in check_add(3, 3, 0).detail
    assert "remov" in check_add(3, 2, 0).detail  # suggests replace = remove first
    assert "promote" in check_add(3, 3, 1).detail


@pytest.mark.parametrize(
    ("members", "healthy", "target_healthy", "force", "allowed", "rule"),
    [
        (3, 3, True, False, True, "ok"),
        (3, 2, False, False, True, "ok"),  # remove the dead one: 2 of 2 left
        (3, 2, True, False, False, "quorum-after-remove"),  # would leave 1 of 2
        (5, 4, True, False, True, "ok"),  # 3 of 4 healthy left, quorum 3
        (5, 3, True, False, False, "quorum-after-remove"),  # 2 of 4 < 3
        (5, 3, False, False, True, "ok"),  # 3 of 4 healthy, quorum 3
        (4, 2, False, False, False, "no-quorum"),  # cannot commit a change now
        (2, 2, True, False, False, "two-to-one"),
        (2, 2, True, True, True, "ok"),
        (2, 1, False, True, False, "no-quorum"),
        (1, 1, True, True, False, "last-member"),
        (1, 1, True, False, False, "last-member"),
    ],
)
def test_check_remove_table(
    members: int, healthy: int, target_healthy: bool, force: bool, allowed: bool, rule: str
) -> None:
    verdict = check_remove(members, healthy, target_healthy, force)
    assert isinstance(verdict, Verdict)
    assert (verdict.allowed, verdict.rule) == (allowed, rule)
    assert f"members={members}" in verdict.detail and "quorum=" in verdict.detail


def test_check_remove_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        check_remove(3, 4, True, False)
    with pytest.raises(ValueError):
        check_add(3, -1, 0)


@st.composite
def removals(draw: st.DrawFn) -> tuple[int, int, bool, bool]:
    members = draw(st.integers(min_value=0, max_value=9))
    healthy = draw(st.integers(min_value=0, max_value=members))
    return members, healthy, draw(st.booleans()), draw(st.booleans())


@given(removals())
def test_allowed_removal_keeps_quorum(args: tuple[int, int, bool, bool]) -> None:
    members, healthy, target_healthy, force = args
    verdict = check_remove(members, healthy, target_healthy, force)
    if not verdict.allowed:
        return
    remaining = members - 1
    # inconsistent inputs (unhealthy target, all healthy) count as removing a healthy one
    left = healthy - 1 if target_healthy or healthy == members else healthy
    assert remaining >= 1
    assert healthy >= quorum_size(members)  # the change itself can commit
    assert left >= quorum_size(remaining)  # and the smaller cluster keeps quorum
    assert force or members != 2


@given(removals())
def test_force_only_overrides_two_to_one(args: tuple[int, int, bool, bool]) -> None:
    members, healthy, target_healthy, _ = args
    forced = check_remove(members, healthy, target_healthy, True)
    unforced = check_remove(members, healthy, target_healthy, False)
    if forced.allowed != unforced.allowed:
        assert members == 2 and unforced.rule == "two-to-one"


@given(st.integers(1, 9), st.integers(0, 9), st.integers(0, 2))
def test_allowed_add_needs_full_health(members: int, healthy: int, learners: int) -> None:
    healthy = min(healthy, members)
    verdict = check_add(members, healthy, learners)
    assert verdict.allowed == (healthy == members and learners == 0)
