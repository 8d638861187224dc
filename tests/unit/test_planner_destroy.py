"""`destroy`'s planner, from data: whose each host is (refused, or --force), what happens to
each data dir, and whether the local state goes too. No network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.core.identity import foreign_hosts, identity_refusals
from orchestrator.core.inventory import Inventory
from orchestrator.core.plan import Plan
from orchestrator.core.planners.destroy import plan_destroy
from tests.unit.helpers import make_inventory
from tests.unit.identity_facts import host, observed, our_env

TEARDOWN = (
    "stop and disable etcd and the backup timer; remove their units, the binaries, "
    "etcd-deploy's config files and the run lock"
)


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return make_inventory(tmp_path)


def rows(plan: Plan) -> list[tuple[str, str | None, str]]:
    return [(s.phase, s.host, s.action) for s in plan.steps]


def test_a_cluster_of_ours_is_torn_down_on_every_host_at_once(inv: Inventory) -> None:
    plan = plan_destroy(inv, observed(inv))
    removed = f"{TEARDOWN}; remove /var/lib/etcd, the on-host backups and the etcd user"
    assert rows(plan) == [("destroy", f"etcd{i}", removed) for i in (1, 2, 3)]
    assert all(s.parallel and s.destructive and s.changes for s in plan.steps)
    assert not plan.refusals and plan.exit_code == 10
    state = inv.cluster.state_dir
    assert plan.lines() == [
        f"[destroy etcd{i}] {removed} (marked as this cluster's) [destructive]" for i in (1, 2, 3)
    ] + [f"= local state kept in {state} (CA, certs, backups); --purge-state removes it"]
    json.dumps(plan.as_data())  # what --dry-run --json prints


def test_purge_state_is_its_own_step_after_every_host(inv: Inventory) -> None:
    plan = plan_destroy(inv, observed(inv), purge_state=True)
    assert [(s.phase, s.host) for s in plan.steps][-1] == ("state", None)
    last = plan.steps[-1]
    assert last.handler == "purge-state" and last.destructive and last.changes
    assert "remove what etcd-deploy wrote in" in last.action and not plan.noops


def test_data_dirs_by_what_they_are(inv: Inventory) -> None:
    obs = observed(
        inv,
        etcd1=host(inv, "etcd1", data="none", env=False, running=False),
        etcd2=host(inv, "etcd2", data="unmarked", running=False),
        etcd3=host(inv, "etcd3", data="empty", running=False),
    )
    plan = plan_destroy(inv, obs)
    assert [(s.host, s.action.removeprefix(TEARDOWN), s.reason) for s in plan.steps] == [
        ("etcd1", "", "no /var/lib/etcd"),
        (
            "etcd2",
            "; keep /var/lib/etcd",
            "/var/lib/etcd carries no marker of this cluster; --force removes it",
        ),
        (
            "etcd3",
            "; keep /var/lib/etcd",
            "/var/lib/etcd carries no marker of this cluster; --force removes it",
        ),
    ]
    forced = plan_destroy(inv, obs, force=True)
    assert [s.reason for s in forced.steps] == ["no /var/lib/etcd"] + [
        "--force: whatever it holds"
    ] * 2
    assert "remove /var/lib/etcd" in forced.steps[1].action


def test_a_kept_data_dir_keeps_the_local_state(inv: Inventory) -> None:
    obs = observed(inv, etcd2=host(inv, "etcd2", data="unmarked", running=False))
    plan = plan_destroy(inv, obs, purge_state=True)
    last = plan.steps[-1]
    assert (last.phase, last.action) == (
        "state",
        f"keep the local state in {inv.cluster.state_dir}",
    )
    assert not last.changes and not last.destructive
    assert last.reason.startswith("etcd2 keep their data dir")
    assert plan_destroy(inv, obs, purge_state=True, force=True).steps[-1].destructive


def test_another_clusters_marker_is_refused_before_any_step(inv: Inventory) -> None:
    obs = observed(inv, etcd1=host(inv, "etcd1", data="foreign"))
    plan = plan_destroy(inv, obs)
    assert not plan.steps and plan.exit_code == 5
    (refusal,) = plan.refusals
    assert refusal.override == "--force"
    assert refusal.reason.startswith(
        "destroy refused: etcd1: /var/lib/etcd belongs to cluster 'lab'"
    )
    error = plan.refusal_error()
    assert error is not None and error.exit_code == 5
    assert str(error).endswith(
        "(a wrong inventory or address?). --force destroys them anyway, data dirs included; "
        "nothing was changed"
    )
    forced = plan_destroy(inv, obs, force=True)
    assert not forced.refusals and len(forced.steps) == 3
    assert forced.warnings == (
        "--force: going on although etcd1: /var/lib/etcd belongs to cluster 'lab'",
    )
    assert "remove /var/lib/etcd" in forced.steps[0].action


@pytest.mark.parametrize(
    ("facts", "trust", "found"),
    [
        (
            {"data": "link"},
            "ours",
            "/var/lib/etcd (cluster.data_dir) is a symlink to /srv/elsewhere",
        ),
        ({"data": "unmarked"}, "foreign", "its etcd trusts another CA than this state dir's"),
        ({"data": "unmarked"}, "none", "nothing proves to be this cluster's"),
        ({"env": "ETCD_NAME=etcd2\n"}, "ours", "its etcd.env names member 'etcd2', not 'etcd1'"),
        (
            {"env": "ETCD_INITIAL_CLUSTER_TOKEN=etcd-cluster-1\n"},
            "ours",
            "its etcd.env names cluster token 'etcd-cluster-1', not one of 'demo'",
        ),
    ],
)
def test_what_makes_a_host_not_ours(
    inv: Inventory, facts: dict[str, str], trust: str, found: str
) -> None:
    obs = observed(inv, {"etcd1": host(inv, "etcd1", **facts)}, trust={"etcd1": trust})  # type: ignore[arg-type]
    plan = plan_destroy(inv, obs)
    (refusal,) = plan.refusals
    assert refusal.reason.startswith("destroy refused: etcd1: ")
    assert found in refusal.reason.split(". These hosts")[0], refusal.reason
    assert not plan.steps


def test_a_symlinked_data_dir_is_kept_even_with_force(inv: Inventory) -> None:
    obs = observed(inv, etcd1=host(inv, "etcd1", data="link", running=False))
    plan = plan_destroy(inv, obs, force=True)
    assert plan.steps[0].action == f"{TEARDOWN}; keep /var/lib/etcd"
    assert "is a symlink to /srv/elsewhere" in plan.steps[0].reason


def test_an_env_of_another_address_is_named(inv: Inventory) -> None:
    text = our_env(inv, "etcd1").replace("192.0.2.11", "192.0.2.99")
    obs = observed(inv, etcd1=host(inv, "etcd1", env=text))
    assert foreign_hosts(inv, obs) == {
        "etcd1": [
            "its member advertises https://192.0.2.99:2380, the inventory says "
            "https://192.0.2.11:2380"
        ]
    }


def test_only_the_judged_hosts_count(inv: Inventory) -> None:
    """remove-node judges the host it removes only; the others are read for their locks."""
    obs = observed(inv, etcd3=host(inv, "etcd3", data="foreign"))
    assert identity_refusals(
        inv, obs, command="remove etcd1", force=False, forced="x", judged=["etcd1"]
    ) == ((), ())
    refusals, warnings = identity_refusals(
        inv, obs, command="remove etcd3", force=False, forced="Check it.", judged=["etcd3"]
    )
    assert not warnings and refusals[0].reason.startswith("remove etcd3 refused: etcd3: ")
    assert refusals[0].reason.endswith("(a wrong inventory or address?). Check it")
    assert refusals[0].override == ""
