"""`defrag`'s planner, from data: each member's DB size and in-use size (from the cluster
view) in; which members are defragmented (leader last), which are skipped below the
threshold and why, and the NOSPACE disarm at the end, out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.core.cluster_view import ClusterView
from orchestrator.core.inventory import Inventory
from orchestrator.core.plan import Noop, Plan
from orchestrator.core.planners.defrag import below_threshold, free_percent, plan_defrag
from tests.unit.helpers import make_inventory
from tests.unit.views import member_id, view

MIB = 1 << 20


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return make_inventory(tmp_path)


def sized(inv: Inventory, cluster: ClusterView, **sizes: tuple[int, int]) -> ClusterView:
    """`cluster` with etcd2=(db MiB, in use MiB) for the members named."""
    for name, (db, in_use) in sizes.items():
        mid = member_id(inv, name)
        cluster.statuses[mid] = replace(
            cluster.statuses[mid], db_size=db * MIB, db_size_in_use=in_use * MIB
        )
    return cluster


def rolled(plan: Plan) -> list[str | None]:
    return [s.host for s in plan.steps if s.rolling]


def test_every_member_above_the_threshold_leader_last_then_the_disarm_check(
    inv: Inventory,
) -> None:
    plan = plan_defrag(inv, view(inv, leader="etcd1"), 20)  # 60% free everywhere
    assert [(s.phase, s.host, s.action) for s in plan.steps] == [
        ("defrag", "etcd2", "defragment if at least 20% of its DB is free"),
        ("defrag", "etcd3", "defragment if at least 20% of its DB is free"),
        ("defrag", "etcd1", "defragment if at least 20% of its DB is free"),
        ("defrag", None, "disarm a NOSPACE alarm if one is raised by then"),
    ]
    assert all(s.quorum_check and not s.destructive for s in plan.steps if s.rolling)
    assert plan.steps[0].reason == "60% of its 100.0 MiB DB free"
    assert (
        plan.steps[2].reason == "60% of its 100.0 MiB DB free; leader: leadership handed over first"
    )
    assert plan.steps[0].args["tolerate"] == ("NOSPACE",)
    assert plan.steps[0].args["threshold"] == 20
    assert not plan.steps[-1].changes and not plan.steps[-1].rolling
    assert plan.noops == () and plan.exit_code == 10


def test_members_below_the_threshold_are_noops_with_the_numbers(inv: Inventory) -> None:
    cluster = sized(inv, view(inv, leader="etcd1"), etcd2=(200, 190))
    plan = plan_defrag(inv, cluster, 20)
    assert rolled(plan) == ["etcd3", "etcd1"]
    assert plan.noops == (
        Noop("etcd2", "5% free inside the DB (200.0 MiB), below the 20% threshold"),
    )


def test_every_member_below_the_threshold_changes_nothing(inv: Inventory) -> None:
    plan = plan_defrag(inv, view(inv), 70)
    assert rolled(plan) == []
    assert [n.host for n in plan.noops] == ["etcd1", "etcd2", "etcd3"]
    assert not plan.changes and plan.exit_code == 0


def test_free_space_exactly_at_the_threshold_is_defragmented(inv: Inventory) -> None:
    assert rolled(plan_defrag(inv, view(inv, leader="etcd1"), 60)) == ["etcd2", "etcd3", "etcd1"]


def test_threshold_zero_takes_every_member_even_a_full_db(inv: Inventory) -> None:
    cluster = sized(inv, view(inv, leader="etcd1"), etcd2=(100, 100))
    assert rolled(plan_defrag(inv, cluster, 0)) == ["etcd2", "etcd3", "etcd1"]


def test_a_raised_nospace_alarm_is_disarmed_at_the_end(inv: Inventory) -> None:
    cluster = view(inv, leader="etcd1", alarms=[("etcd2", "NOSPACE"), ("etcd3", "NOSPACE")])
    last = plan_defrag(inv, cluster, 10).steps[-1]
    assert (last.phase, last.host, last.action) == (
        "defrag",
        None,
        "disarm the NOSPACE alarm of etcd2, etcd3",
    )
    assert last.changes and last.handler == "disarm"


def test_a_nospace_alarm_alone_is_a_change_even_with_every_member_skipped(
    inv: Inventory,
) -> None:
    plan = plan_defrag(inv, view(inv, alarms=[("etcd1", "NOSPACE")]), 90)
    assert rolled(plan) == [] and plan.changes and plan.exit_code == 10


def test_other_alarms_are_not_disarmed(inv: Inventory) -> None:
    plan = plan_defrag(inv, view(inv, alarms=[("etcd1", "CORRUPT")]), 10)
    assert not plan.steps[-1].changes


def test_a_member_not_answering_is_taken_first_its_size_checked_at_its_turn(
    inv: Inventory,
) -> None:
    plan = plan_defrag(inv, view(inv, leader="etcd1", down={"etcd3"}), 50)
    assert rolled(plan) == ["etcd3", "etcd2", "etcd1"]
    assert plan.steps[0].reason == (
        "its DB size is unknown (not answering): checked at its turn; "
        "not healthy (connection refused): first"
    )


def test_a_host_that_is_not_a_member_is_a_noop(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, hosts=4)
    cluster = sized(inv, view(inv, members=["etcd1", "etcd2", "etcd3"]), etcd3=(100, 99))
    plan = plan_defrag(inv, cluster, 10)
    assert rolled(plan) == ["etcd2", "etcd1"]
    assert [(n.host, n.reason.split(",")[0]) for n in plan.noops] == [
        ("etcd3", "1% free inside the DB (100.0 MiB)"),
        ("etcd4", "not a member of the cluster"),
    ]


@pytest.mark.parametrize(
    ("db", "in_use", "threshold", "skipped"),
    [
        (100, 40, 60, False),
        (100, 41, 60, True),
        (0, 0, 0, False),  # an empty status: 0% free, threshold 0 still defragments
        (0, 0, 1, True),
    ],
)
def test_below_threshold_rule(
    inv: Inventory, db: int, in_use: int, threshold: float, skipped: bool
) -> None:
    status = view(inv, db_size=db, db_in_use=in_use).statuses[member_id(inv, "etcd1")]
    assert (below_threshold(status, threshold) is not None) == skipped
    assert 0 <= free_percent(status) <= 100


def test_plan_lines(inv: Inventory) -> None:
    cluster = sized(inv, view(inv, leader="etcd2", alarms=[("etcd2", "NOSPACE")]), etcd3=(64, 60))
    assert plan_defrag(inv, cluster, 25).lines() == [
        "[defrag etcd1] defragment if at least 25% of its DB is free "
        "(60% of its 100.0 MiB DB free) [quorum]",
        "[defrag etcd2] defragment if at least 25% of its DB is free "
        "(60% of its 100.0 MiB DB free; leader: leadership handed over first) [quorum]",
        "[defrag] disarm the NOSPACE alarm of etcd2 (once the members are defragmented)",
        "etcd3: no changes (6% free inside the DB (64.0 MiB), below the 25% threshold)",
    ]
