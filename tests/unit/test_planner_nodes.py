"""`plan_remove_node` from data: whose the host is, which member it is, quorum, and what a
removal does to an unreachable host. No network."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.cluster_view import Member
from orchestrator.core.inventory import Inventory
from orchestrator.core.plan import Plan
from orchestrator.core.planners.nodes import RemoveObserved, plan_remove_node
from tests.unit import identity_facts as idf
from tests.unit.helpers import make_inventory
from tests.unit.views import member_id, view


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return make_inventory(tmp_path)


def plan(inv: Inventory, name: str, obs: RemoveObserved, **kw: bool) -> Plan:
    return plan_remove_node(
        inv, name, obs, wipe=kw.get("wipe", False), force=kw.get("force", False)
    )


def handlers(p: Plan) -> list[str]:
    return [s.handler for s in p.steps]


def test_a_follower_is_removed_then_its_host_cleaned_then_the_inventory(inv: Inventory) -> None:
    p = plan(inv, "etcd3", RemoveObserved(idf.observed(inv), view(inv, leader="etcd1")))
    assert handlers(p) == ["remove-member", "clean", "inventory"]
    remove = p.steps[0]
    assert remove.destructive and remove.quorum_check
    assert remove.args["member"].id == member_id(inv, "etcd3")
    assert remove.reason == "voter, 2 left after"
    assert p.steps[1].action.endswith("keep /var/lib/etcd (--wipe removes it)")
    assert p.exit_code == 10


def test_the_leader_hands_leadership_over_first(inv: Inventory) -> None:
    p = plan(inv, "etcd2", RemoveObserved(idf.observed(inv), view(inv, leader="etcd2")))
    assert handlers(p) == ["hand-over", "remove-member", "clean", "inventory"]


def test_wipe_says_the_data_dir_goes_only_when_marked(inv: Inventory) -> None:
    p = plan(inv, "etcd3", RemoveObserved(idf.observed(inv), view(inv)), wipe=True)
    clean = p.steps[1]
    assert clean.args["wipe"] and "marker" in clean.reason


def test_an_unreachable_host_leaves_the_membership_but_its_files_stay(inv: Inventory) -> None:
    identity = idf.observed(inv)
    facts = {n: f for n, f in identity.facts.items() if n != "etcd3"}
    obs = RemoveObserved(idf.IdentityObserved(facts, identity.trust, identity.marker), view(inv))
    p = plan(inv, "etcd3", obs)
    assert handlers(p) == ["remove-member", "inventory"]
    assert p.warnings == ("etcd3 is unreachable: its files will be left in place",)


def test_another_clusters_host_is_refused_even_with_force(inv: Inventory) -> None:
    other = idf.host(inv, "etcd3", data="foreign")
    p = plan(inv, "etcd3", RemoveObserved(idf.observed(inv, etcd3=other), view(inv)), force=True)
    assert p.steps == () and p.exit_code == 5
    assert p.refusals[0].reason.startswith("remove etcd3 refused: etcd3: ")
    assert "destroy --force" in p.refusals[0].reason


def test_a_stale_address_matching_no_member_where_etcd_runs_is_refused(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path)
    cluster = view(inv, members=["etcd1", "etcd2"])
    p = plan(inv, "etcd3", RemoveObserved(idf.observed(inv), cluster))
    assert "etcd runs on etcd3, but no member" in p.refusals[0].reason
    assert "is the inventory stale?" in p.refusals[0].reason


def test_a_member_matched_by_name_with_another_peer_url_is_refused(inv: Inventory) -> None:
    moved = Member(member_id(inv, "etcd3"), "etcd3", ("https://192.0.2.99:2380",), (), False)
    cluster = view(inv, members=["etcd1", "etcd2"], extra=[moved])
    p = plan(inv, "etcd3", RemoveObserved(idf.observed(inv), cluster))
    assert p.refusals[0].reason.startswith("[remove etcd3] refused: member etcd3")
    assert "was etcd_address or peer_port edited?" in p.refusals[0].reason


def test_a_host_that_is_no_member_and_runs_nothing_is_just_cleaned(inv: Inventory) -> None:
    stopped = idf.host(inv, "etcd3", running=False)
    cluster = view(inv, members=["etcd1", "etcd2"])
    p = plan(inv, "etcd3", RemoveObserved(idf.observed(inv, etcd3=stopped), cluster))
    assert handlers(p) == ["clean", "inventory"]
    assert [n.reason for n in p.noops] == ["etcd3 is not a member of the cluster"]


@pytest.mark.parametrize(
    ("members", "down", "force", "rule", "override"),
    [
        (["etcd1", "etcd2"], (), False, "two-to-one", "--force"),
        (["etcd1", "etcd2", "etcd3"], ("etcd1", "etcd2"), True, "no-quorum", ""),
        (["etcd1", "etcd2", "etcd3"], ("etcd1",), False, "quorum-after-remove", ""),
    ],
)
def test_removals_that_put_quorum_at_risk_are_refused(
    inv: Inventory,
    members: list[str],
    down: tuple[str, ...],
    force: bool,
    rule: str,
    override: str,
) -> None:
    target = members[-1]
    cluster = view(inv, members=members, down=down, leader=target)
    p = plan(inv, target, RemoveObserved(idf.observed(inv), cluster), force=force)
    assert p.refusals[0].reason.startswith(f"[remove {target}] refused by rule {rule}: ")
    assert p.refusals[0].override == override and p.steps == ()


def test_two_to_one_goes_with_force(inv: Inventory) -> None:
    cluster = view(inv, members=["etcd1", "etcd2"])
    p = plan(inv, "etcd2", RemoveObserved(idf.observed(inv), cluster), force=True)
    assert not p.refusals and "remove-member" in handlers(p)


def test_a_learner_is_removed_without_a_quorum_rule(inv: Inventory) -> None:
    cluster = view(inv, members=["etcd1", "etcd2", "etcd3"], learners={"etcd3"}, down={"etcd2"})
    p = plan(inv, "etcd3", RemoveObserved(idf.observed(inv), cluster))
    remove = p.steps[0]
    assert remove.handler == "remove-member" and remove.reason == "learner"
    assert not remove.quorum_check


def test_two_plans_in_one_for_replace_node(inv: Inventory) -> None:
    removal = plan(inv, "etcd3", RemoveObserved(idf.observed(inv), view(inv)))
    both = removal.then(Plan("up", steps=removal.steps[:1]))
    assert both.command == "remove-node+up" and len(both.steps) == 4
