"""`plan_up` from data (pyinfra style): observed facts and cluster views in, steps out, for
every decision `up` makes (bootstrap, join, start, restart, stale members, foreign data,
folders that are not ours, version changes, whose CA) and every refusal. No network."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.cluster_view import Member
from orchestrator.core.errors import EXIT_CHANGES_PENDING
from orchestrator.core.facts import HostFacts
from orchestrator.core.inventory import Inventory
from orchestrator.core.ownership import DirFacts
from orchestrator.core.plan import Plan
from orchestrator.core.planners.up import UpObserved, plan_up, token_from
from tests.unit.helpers import (
    CA_PEM,
    MARKER,
    TOKEN,
    converged_facts,
    env_for,
    fake_certs,
    make_inventory,
    wanted_files,
)
from tests.unit.views import member_id, view

ENV_PATH = "/etc/etcd/etcd.env"


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return make_inventory(tmp_path)


def observed(
    inv: Inventory,
    facts: dict[str, HostFacts],
    cluster=None,
    *,
    trust: dict[str, str] | None = None,
) -> UpObserved:
    return UpObserved(
        facts=facts,
        view=cluster,
        token=TOKEN,
        trust=trust or dict.fromkeys(facts, "ours"),
        ca_pem=CA_PEM,
        certs={h.name: fake_certs() for h in inv.hosts},
        marker=MARKER,
        pki_dir="/state/pki",
    )


def bare(inv: Inventory) -> dict[str, HostFacts]:
    return {h.name: HostFacts(arch="x86_64") for h in inv.hosts}


def running(inv: Inventory, **kw: object) -> dict[str, HostFacts]:
    """Every host converged, etcd running, members of the cluster."""
    return {
        h.name: converged_facts(inv, wanted_files(inv, h, env=env_for(inv, h)), **kw)  # type: ignore[arg-type]
        for h in inv.hosts
    }


def steps(plan: Plan) -> list[tuple[str, str | None, str]]:
    return [(s.phase, s.host, s.handler) for s in plan.steps]


def test_fresh_hosts_learner_mode_founder_installs_first_then_joins_one_at_a_time(
    inv: Inventory,
) -> None:
    plan = plan_up(inv, observed(inv, bare(inv)))
    assert steps(plan) == [
        ("release", None, "release"),
        ("install", "etcd1", "install"),
        ("install", "etcd2", "install"),
        ("install", "etcd3", "install"),
        ("bootstrap", "etcd1", "bootstrap"),
        ("join", "etcd2", "join"),
        ("join", "etcd3", "join"),
    ]
    install = plan.steps[1:4]
    assert [s.background for s in install] == [False, True, True]
    assert all(s.quorum_check for s in plan.steps[5:])
    assert not plan.refusals and plan.exit_code == EXIT_CHANGES_PENDING
    assert plan.steps[0].changes is False  # fetching the release changes no host


def test_parallel_bootstrap_starts_every_founder_at_once(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, bootstrap="parallel")
    plan = plan_up(inv, observed(inv, bare(inv)))
    assert ("bootstrap", None, "bootstrap") in steps(plan)
    assert plan.steps[-1].args["founders"] == ["etcd1", "etcd2", "etcd3"]
    assert all(s.background for s in plan.steps if s.phase == "install")
    assert not any(s.phase == "join" for s in plan.steps)


def test_a_converged_cluster_has_nothing_to_do(inv: Inventory) -> None:
    plan = plan_up(inv, observed(inv, running(inv), view(inv)))
    assert plan.steps == () and plan.exit_code == 0
    assert [n.host for n in plan.noops] == ["etcd1", "etcd2", "etcd3"]
    assert plan.lines()[0].startswith("etcd1: no changes (etcd 3.5.30 already installed")


def test_a_changed_flag_restarts_every_member_rolling(tmp_path: Path) -> None:
    old = make_inventory(tmp_path)
    facts = running(old)
    inv = make_inventory(tmp_path, flags={"heartbeat-interval": "150"})
    plan = plan_up(inv, observed(inv, facts, view(inv, leader="etcd2")))
    restarts = [s for s in plan.steps if s.phase == "restart"]
    assert [s.host for s in restarts] == ["etcd1", "etcd2", "etcd3"]
    assert all(s.rolling and s.quorum_check for s in restarts)
    assert restarts[0].action == "restart etcd (changed: env)"
    assert any("+ETCD_HEARTBEAT_INTERVAL=150" in line for line in restarts[0].detail)
    assert not any(s.phase == "install" for s in plan.steps)  # env waits for the restart


def test_a_stopped_cluster_starts_its_members_then_waits_until_healthy(inv: Inventory) -> None:
    facts = running(inv, active_state="inactive")
    plan = plan_up(inv, observed(inv, facts, None))
    membership = [step for step in steps(plan) if step[0] != "install"]
    assert membership == [
        ("start", "etcd1", "start"),
        ("start", "etcd2", "start"),
        ("start", "etcd3", "start"),
        ("start", None, "healthy"),
    ]
    gate = plan.steps[-1]
    assert gate.quorum_check and not gate.changes
    # with no member answering, the env names the member alone: its ETCD_INITIAL_* lines
    # change (read only at a member's first start), nothing else
    installs = [s for s in plan.steps if s.phase == "install"]
    assert all(s.action == "write 1 file(s): env" for s in installs)


def test_data_of_a_host_that_is_not_a_member_is_refused_then_moved_aside_at_its_join(
    inv: Inventory,
) -> None:
    facts = running(inv)
    facts["etcd3"] = HostFacts(arch="x86_64", has_data=True)
    cluster = view(inv, members=["etcd1", "etcd2"])
    refused = plan_up(inv, observed(inv, facts, cluster))
    assert [(r.host, r.override) for r in refused.refusals] == [("etcd3", "--force")]
    assert "is not a member of the running cluster" in refused.refusals[0].reason
    assert refused.steps == () and refused.exit_code == 5
    forced = plan_up(inv, observed(inv, facts, cluster), force=True)
    tail = steps(forced)[-2:]
    assert tail == [("join", "etcd3", "data-aside"), ("join", "etcd3", "join")]
    assert forced.steps[-2].destructive


def test_a_stale_member_is_refused_then_removed_and_joined_again(inv: Inventory) -> None:
    facts = running(inv)
    facts["etcd3"] = HostFacts(arch="x86_64")  # etcd and its data are gone
    refused = plan_up(inv, observed(inv, facts, view(inv)))
    assert "still a member (102)" in refused.refusals[0].reason
    forced = plan_up(inv, observed(inv, facts, view(inv)), force=True)
    remove = next(s for s in forced.steps if s.handler == "remove-stale")
    assert remove.host == "etcd3" and remove.destructive and remove.quorum_check
    assert remove.args["member"].id == member_id(inv, "etcd3")
    order = [s.handler for s in forced.steps if s.host == "etcd3"]
    assert order.index("remove-stale") < order.index("join")


def test_data_no_etcd_env_of_ours_names_is_foreign_without_a_cluster(inv: Inventory) -> None:
    facts = bare(inv)
    facts["etcd2"] = HostFacts(arch="x86_64", has_data=True)  # another tool's data
    refused = plan_up(inv, observed(inv, facts))
    assert refused.refusals[0].reason.startswith("etcd2: /var/lib/etcd holds data that this")
    forced = plan_up(inv, observed(inv, facts), force=True)
    aside = [s for s in forced.steps if s.handler == "data-aside"]
    assert [(s.phase, s.host) for s in aside] == [("up", "etcd2")]
    # planned as bare: the whole cluster is new, etcd1 founds it, etcd2 joins
    assert ("bootstrap", "etcd1", "bootstrap") in steps(forced)
    assert ("join", "etcd2", "join") in steps(forced)


def test_data_with_our_env_naming_the_host_is_a_stopped_member(inv: Inventory) -> None:
    facts = bare(inv)
    facts["etcd1"] = HostFacts(arch="x86_64", has_data=True, texts={ENV_PATH: "ETCD_NAME=etcd1\n"})
    facts["etcd3"] = HostFacts(arch="x86_64", has_data=True, texts={ENV_PATH: "ETCD_NAME=lonely"})
    refused = plan_up(inv, observed(inv, facts))
    assert refused.refusals[0].reason.startswith("etcd3: ")


def test_a_host_trusting_another_ca_holds_another_clusters_data(inv: Inventory) -> None:
    facts = bare(inv)
    facts["etcd2"] = HostFacts(arch="x86_64", has_data=True, texts={ENV_PATH: "ETCD_NAME=etcd2\n"})
    obs = observed(inv, facts, trust={"etcd1": "none", "etcd2": "foreign", "etcd3": "none"})
    plan = plan_up(inv, obs)
    # every host that holds a cluster trusts another CA: the state dir was lost
    assert "restore the state dir" in plan.refusals[0].reason
    assert plan.refusals[0].override == ""


def test_some_hosts_trusting_another_ca_are_foreign_data(inv: Inventory) -> None:
    facts = running(inv, active_state="inactive")
    trust = {"etcd1": "ours", "etcd2": "ours", "etcd3": "foreign"}
    plan = plan_up(inv, observed(inv, facts, trust=trust))
    assert plan.refusals[0].reason.startswith("etcd3: /var/lib/etcd holds data that this")


def test_up_never_changes_the_version_of_running_members(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.5.17")
    facts = running(inv, version="3.5.16")
    plan = plan_up(inv, observed(inv, facts, view(inv)))
    assert "use etcd-deploy upgrade 3.5.17" in plan.refusals[0].reason
    assert "runs 3.5.16" in plan.refusals[0].reason


def test_add_node_needs_a_running_cluster(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, hosts=4)
    plan = plan_up(inv, observed(inv, bare(inv)), only="etcd4")
    assert plan.refusals[0].reason == (
        "no running cluster to add etcd4 to: bootstrap it first with etcd-deploy up"
    )


def test_add_node_changes_no_other_host(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, hosts=4)
    facts = running(inv)
    facts["etcd4"] = HostFacts(arch="x86_64")
    cluster = view(inv, members=["etcd1", "etcd2", "etcd3"])
    plan = plan_up(inv, observed(inv, facts, cluster), only="etcd4")
    assert {s.host for s in plan.steps} == {None, "etcd4"}
    assert [s.handler for s in plan.steps] == ["release", "install", "join"]


def test_a_learner_left_by_a_cut_short_join_is_joined_again(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path)
    facts = running(inv)
    cluster = view(inv, learners={"etcd3"})
    plan = plan_up(inv, observed(inv, facts, cluster))
    join = next(s for s in plan.steps if s.phase == "join")
    assert join.host == "etcd3" and "complete its join" in join.reason


def test_members_not_in_the_inventory_are_left_alone_with_a_warning(inv: Inventory) -> None:
    stranger = Member(0x999, "stranger", ("https://192.0.2.99:2380",), (), False)
    plan = plan_up(inv, observed(inv, running(inv), view(inv, extra=[stranger])))
    assert plan.warnings == (
        "member stranger (https://192.0.2.99:2380) is not in the inventory; left alone",
    )


def test_a_symlinked_data_dir_is_refused_even_with_force(inv: Inventory) -> None:
    facts = bare(inv)
    facts["etcd2"].folders["/var/lib/etcd"] = DirFacts(exists=True, link="/srv/etcd")
    plan = plan_up(inv, observed(inv, facts), force=True)
    assert plan.refusals and "etcd2:" in plan.refusals[0].reason
    assert plan.refusals[0].override == ""


def test_another_clusters_config_dir_moves_aside_only_with_force(inv: Inventory) -> None:
    facts = bare(inv)
    other = "etcd-deploy cluster=other id=0123"
    facts["etcd2"].folders["/etc/etcd"] = DirFacts(exists=True, marker=other, entries=("pki",))
    refused = plan_up(inv, observed(inv, facts))
    assert refused.refusals[0].override == "--force"
    forced = plan_up(inv, observed(inv, facts), force=True)
    aside = [s for s in forced.steps if s.handler == "config-aside"]
    assert [s.host for s in aside] == ["etcd2"] and aside[0].destructive


def test_another_tools_config_dir_is_never_taken_over(inv: Inventory) -> None:
    facts = bare(inv)
    facts["etcd3"].folders["/etc/etcd"] = DirFacts(exists=True, entries=("etcd.env", "pki"))
    facts["etcd3"].texts[ENV_PATH] = "ETCD_NAME=etcd3\nETCD_INITIAL_CLUSTER_TOKEN=theirs\n"
    plan = plan_up(inv, observed(inv, facts), force=True)
    assert "never takes over another tool's config dir" in plan.refusals[0].reason


def test_the_plan_as_data_and_as_text(inv: Inventory) -> None:
    plan = plan_up(inv, observed(inv, bare(inv)))
    data = plan.as_data()
    assert data["command"] == "up" and data["changes"] and data["exit_code"] == 10
    assert data["steps"][4] == {
        "phase": "bootstrap",
        "host": "etcd1",
        "action": "start a new cluster 'demo' on etcd1",
        "reason": "no member answers and no host holds data",
        "destructive": False,
        "quorum_check": False,
        "changes": True,
        "detail": [],
    }
    text = plan.lines()
    assert (
        "[install etcd1] prepare the etcd user and directories (no etcd user); install etcd"
        in (text[1])
    )
    assert "    ~ /etc/etcd/pki/peer.key: missing (secret, no diff)" in text


def test_the_token_comes_from_the_hosts(inv: Inventory) -> None:
    facts = running(inv)
    assert token_from(facts, ENV_PATH) == TOKEN
    assert token_from(bare(inv), ENV_PATH) is None
