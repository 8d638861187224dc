"""`restart`'s planner, from data: a cluster view in, the steps out (which members, in which
order, why each sits where it does) and what is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.errors import UsageError
from orchestrator.core.inventory import Inventory
from orchestrator.core.plan import Noop, Plan
from orchestrator.core.planners.restart import plan_restart
from tests.unit.helpers import make_inventory
from tests.unit.views import view


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return make_inventory(tmp_path)


def steps(plan: Plan) -> list[tuple[str, str | None, str]]:
    return [(s.phase, s.host, s.action) for s in plan.steps]


def order(plan: Plan) -> list[str | None]:
    return [s.host for s in plan.steps]


@pytest.mark.parametrize(
    ("leader", "expected"),
    [
        ("etcd1", ["etcd2", "etcd3", "etcd1"]),
        ("etcd2", ["etcd1", "etcd3", "etcd2"]),
        ("etcd3", ["etcd1", "etcd2", "etcd3"]),
    ],
)
def test_every_member_one_at_a_time_the_leader_last(
    inv: Inventory, leader: str, expected: list[str]
) -> None:
    plan = plan_restart(inv, view(inv, leader=leader))
    assert steps(plan) == [("restart", name, "restart etcd") for name in expected]
    assert all(s.rolling and s.quorum_check and not s.destructive for s in plan.steps)
    assert plan.steps[-1].reason == "leader: leadership handed over first"
    assert [s.reason for s in plan.steps[:-1]] == ["", ""]
    assert plan.noops == () and plan.refusals == ()
    assert plan.exit_code == 10


def test_named_hosts_only_in_the_engine_order_not_the_given_one(inv: Inventory) -> None:
    plan = plan_restart(inv, view(inv, leader="etcd1"), ["etcd1", "etcd3"])
    assert order(plan) == ["etcd3", "etcd1"]


def test_a_host_named_twice_is_restarted_once(inv: Inventory) -> None:
    plan = plan_restart(inv, view(inv, leader="etcd1"), ["etcd2", "etcd2"])
    assert order(plan) == ["etcd2"]


def test_a_named_host_that_is_not_a_member_is_a_noop(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, hosts=4)
    cluster = view(inv, members=["etcd1", "etcd2", "etcd3"], leader="etcd1")
    plan = plan_restart(inv, cluster, ["etcd4", "etcd2"])
    assert order(plan) == ["etcd2"]
    assert plan.noops == (Noop("etcd4", "not a member of the cluster"),)


def test_no_member_among_the_named_hosts_changes_nothing(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, hosts=4)
    plan = plan_restart(inv, view(inv, members=["etcd1", "etcd2", "etcd3"]), ["etcd4"])
    assert plan.steps == ()
    assert not plan.changes and plan.exit_code == 0
    assert plan.lines() == ["etcd4: no changes (not a member of the cluster)"]


def test_every_host_by_default_non_members_said(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, hosts=4)
    plan = plan_restart(inv, view(inv, members=["etcd1", "etcd2", "etcd3"], leader="etcd2"))
    assert order(plan) == ["etcd1", "etcd3", "etcd2"]
    assert [n.host for n in plan.noops] == ["etcd4"]


def test_an_unhealthy_member_goes_first_and_says_why(inv: Inventory) -> None:
    plan = plan_restart(inv, view(inv, leader="etcd1", down={"etcd3"}))
    assert order(plan) == ["etcd3", "etcd2", "etcd1"]
    assert plan.steps[0].reason == "not healthy (connection refused): first"


def test_a_lagging_member_goes_first(inv: Inventory) -> None:
    plan = plan_restart(inv, view(inv, leader="etcd1", lag={"etcd3": 5000}))
    assert order(plan) == ["etcd3", "etcd2", "etcd1"]
    assert plan.steps[0].reason == "lagging by 5000 entries: first"


def test_a_member_lagging_a_little_is_a_plain_follower(inv: Inventory) -> None:
    plan = plan_restart(inv, view(inv, leader="etcd1", lag={"etcd3": 10}))
    assert order(plan) == ["etcd2", "etcd3", "etcd1"]
    assert plan.steps[1].reason == ""


def test_a_learner_is_restarted_too_before_the_leader(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, hosts=4)
    plan = plan_restart(inv, view(inv, leader="etcd1", learners={"etcd4"}))
    assert order(plan)[-1] == "etcd1" and sorted(order(plan)) == [
        "etcd1",
        "etcd2",
        "etcd3",
        "etcd4",
    ]


def test_a_single_member_cluster_has_no_one_to_hand_leadership_to(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, hosts=1)
    plan = plan_restart(inv, view(inv))
    assert order(plan) == ["etcd1"]
    assert plan.steps[0].reason == "leader, the only voter: no one to hand leadership to"


def test_an_unknown_host_name_is_a_usage_error(inv: Inventory) -> None:
    with pytest.raises(UsageError, match="no host named 'etcd9'"):
        plan_restart(inv, view(inv), ["etcd1", "etcd9"])


def test_plan_lines_and_data(inv: Inventory) -> None:
    plan = plan_restart(inv, view(inv, leader="etcd2", down={"etcd3"}))
    assert plan.lines() == [
        "[restart etcd3] restart etcd (not healthy (connection refused): first) [quorum]",
        "[restart etcd1] restart etcd [quorum]",
        "[restart etcd2] restart etcd (leader: leadership handed over first) [quorum]",
    ]
    data = plan.as_data()
    assert data["command"] == "restart" and data["exit_code"] == 10
    assert [s["host"] for s in data["steps"]] == ["etcd3", "etcd1", "etcd2"]
