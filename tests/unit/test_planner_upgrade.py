"""`upgrade`'s planner, from data: the inventory, the target and the cluster view (each
member's version, health, leader) in; the refusals (version path, known-bad, unhealthy) or
the steps (release, backup first, each member leader last, the inventory last) out."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.core.cluster_view import ClusterView
from orchestrator.core.errors import InventoryError, UsageError
from orchestrator.core.inventory import Inventory
from orchestrator.core.plan import Noop, Plan
from orchestrator.core.planners.upgrade import plan_target, plan_upgrade, summary
from tests.unit.helpers import make_inventory
from tests.unit.views import member_id, view


def steps(plan: Plan) -> list[tuple[str, str | None, str]]:
    return [(s.phase, s.host, s.action) for s in plan.steps]


def versions(inv: Inventory, cluster: ClusterView, **by_host: str) -> ClusterView:
    for name, version in by_host.items():
        mid = member_id(inv, name)
        cluster.statuses[mid] = replace(cluster.statuses[mid], version=version)
    return cluster


def refusal(plan: Plan) -> tuple[str, int, str]:
    (only,) = plan.refusals
    assert plan.steps == ()
    return only.reason, only.exit_code, only.override


def test_patch_upgrade_release_backup_each_member_leader_last_inventory(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.5.16")
    plan = plan_upgrade(inv, view(inv, leader="etcd1", version="3.5.16"), "3.5.17")
    assert steps(plan) == [
        ("release", None, "fetch etcd 3.5.17 for each host's architecture, verified"),
        ("backup", None, "snapshot of the leader into the state dir"),
        ("upgrade", "etcd2", "install etcd 3.5.17 and restart"),
        ("upgrade", "etcd3", "install etcd 3.5.17 and restart"),
        ("upgrade", "etcd1", "install etcd 3.5.17 and restart"),
        ("inventory", None, f'set etcd_version = "3.5.17" in {inv.path}'),
    ]
    release, backup, *members, inventory = plan.steps
    assert not release.changes and release.handler == "release"
    assert (
        backup.reason
        == "first: the way back from the patch upgrade 3.5.16 -> 3.5.17, one member at a time"
    )
    assert all(s.rolling and s.quorum_check and not s.destructive for s in members)
    assert all(s.args["version"] == "3.5.17" for s in members)
    assert members[0].reason == "runs etcd 3.5.16"
    assert members[-1].reason == "runs etcd 3.5.16; leader: leadership handed over first"
    assert inventory.args["version"] == "3.5.17" and inventory.handler == "inventory"
    assert plan.refusals == () and plan.noops == () and plan.exit_code == 10
    assert summary(plan) == "3.5.16 -> 3.5.17: patch upgrade 3.5.16 -> 3.5.17, one member at a time"


def test_minor_upgrade_one_minor_at_a_time(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.4.23")
    plan = plan_upgrade(inv, view(inv, leader="etcd3", version="3.4.23"), "3.5.17")
    assert [s.host for s in plan.steps if s.rolling] == ["etcd1", "etcd2", "etcd3"]
    assert summary(plan) == "3.4.23 -> 3.5.17: minor upgrade 3.4.23 -> 3.5.17, one member at a time"


def test_a_member_already_at_the_target_is_still_rolled_saying_so(tmp_path: Path) -> None:
    """A re-run after a stop half-way: every member goes through the roll again."""
    inv = make_inventory(tmp_path, version="3.5.16")
    cluster = versions(inv, view(inv, leader="etcd1", version="3.5.16"), etcd2="3.5.17")
    plan = plan_upgrade(inv, cluster, "3.5.17")
    assert [(s.host, s.reason) for s in plan.steps if s.rolling][:2] == [
        ("etcd2", "runs etcd 3.5.17"),
        ("etcd3", "runs etcd 3.5.16"),
    ]
    assert summary(plan) == (
        "3.5.16, 3.5.17 -> 3.5.17: patch upgrade 3.5.16, 3.5.17 -> 3.5.17, one member at a time"
    )


def test_every_member_at_the_target_and_the_inventory_too_changes_nothing(
    tmp_path: Path,
) -> None:
    inv = make_inventory(tmp_path, version="3.5.30")
    plan = plan_upgrade(inv, view(inv), "3.5.30")
    assert plan.steps == () and plan.exit_code == 0
    assert plan.noops == (Noop(None, "every member already runs etcd 3.5.30"),)
    assert plan.lines() == ["= every member already runs etcd 3.5.30"]


def test_every_member_at_the_target_only_the_inventory_changes(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.5.16")
    plan = plan_upgrade(inv, view(inv, version="3.5.17"), "3.5.17")
    assert steps(plan) == [("inventory", None, f'set etcd_version = "3.5.17" in {inv.path}')]
    assert plan.steps[0].reason == "every member runs etcd 3.5.17 already"
    assert plan.exit_code == 10 and summary(plan) is None


def test_a_host_that_is_not_a_member_is_a_noop(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.5.16", hosts=4)
    cluster = view(inv, members=["etcd1", "etcd2", "etcd3"], leader="etcd1", version="3.5.16")
    plan = plan_upgrade(inv, cluster, "3.5.17")
    assert [s.host for s in plan.steps if s.rolling] == ["etcd2", "etcd3", "etcd1"]
    assert plan.noops == (Noop("etcd4", "not a member of the cluster"),)


@pytest.mark.parametrize(
    ("current", "target", "rule"),
    [
        ("3.5.17", "3.5.16", "no-downgrade: a member runs etcd 3.5.17, target is 3.5.16"),
        ("3.4.23", "3.6.0", "minor-one-at-a-time: etcd 3.4.23 -> 3.6.0 skips a minor version"),
        ("3.5.17", "3.6.0", "min-source-patch: etcd 3.5.17 -> 3.6.0 needs every member on 3.5.32"),
        ("3.5.17", "4.0.0", "no-major-upgrade: etcd 3.5.17 -> 4.0.0 changes the major version"),
    ],
)
def test_version_path_refusals(tmp_path: Path, current: str, target: str, rule: str) -> None:
    inv = make_inventory(tmp_path, version=current)
    reason, code, override = refusal(plan_upgrade(inv, view(inv, version=current), target))
    assert reason.startswith(rule) and code == 5 and override == ""


def test_one_member_too_old_refuses_the_minor_jump(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.5.32")
    cluster = versions(inv, view(inv, version="3.5.32"), etcd3="3.5.20")
    reason, _, _ = refusal(plan_upgrade(inv, cluster, "3.6.0"))
    assert reason.startswith("min-source-patch: etcd 3.5.20 -> 3.6.0")


def test_known_bad_target_is_refused_with_its_override(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.4.23")
    plan = plan_upgrade(inv, view(inv, version="3.4.23"), "3.5.1")
    reason, code, override = refusal(plan)
    assert reason.startswith("known-bad-version: refusing etcd 3.5.1")
    assert code == 5 and override == "--allow-known-bad" and plan.exit_code == 5
    error = plan.refusal_error()
    assert error is not None and str(error).endswith("; nothing was changed")


def test_known_bad_target_allowed_goes_ahead_with_a_warning(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.4.23")
    plan = plan_upgrade(inv, view(inv, version="3.4.23"), "3.5.1", allow_known_bad=True)
    assert plan.refusals == () and len([s for s in plan.steps if s.rolling]) == 3
    known_bad, advisory = plan.warnings
    assert known_bad.startswith("deploying known-bad etcd 3.5.1 because it was explicitly allowed")
    assert advisory.startswith("etcd 3.5.1: ") and "etcd-io/etcd#19557" in advisory


@pytest.mark.parametrize(
    ("source", "target", "marker"),
    [
        ("3.4.22", "3.4.23", "end of life"),
        ("3.5.16", "3.5.19", "fixed in 3.5.20"),
    ],
)
def test_a_target_with_an_advisory_goes_ahead_with_it_as_a_warning(
    tmp_path: Path, source: str, target: str, marker: str
) -> None:
    inv = make_inventory(tmp_path, version=source)
    plan = plan_upgrade(inv, view(inv, version=source), target)
    assert plan.refusals == () and len([s for s in plan.steps if s.rolling]) == 3
    (warning,) = plan.warnings
    assert warning.startswith(f"etcd {target}: ") and marker in warning


def test_a_target_without_an_advisory_warns_nothing(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.5.16")
    assert plan_upgrade(inv, view(inv, version="3.5.16"), "3.5.30").warnings == ()


def test_an_unhealthy_cluster_is_refused_with_exit_6(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.5.16")
    cluster = view(inv, leader="etcd1", down={"etcd3"}, version="3.5.16")
    reason, code, _ = refusal(plan_upgrade(inv, cluster, "3.5.17"))
    assert reason == "upgrade needs a healthy cluster first: etcd3: connection refused"
    assert code == 6


def test_an_alarm_makes_the_cluster_unhealthy_for_an_upgrade(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.5.16")
    cluster = view(inv, alarms=[("etcd2", "NOSPACE")], version="3.5.16")
    reason, code, _ = refusal(plan_upgrade(inv, cluster, "3.5.17"))
    assert "alarm NOSPACE on etcd2" in reason and code == 6


def test_the_target_is_checked_before_the_cluster(tmp_path: Path) -> None:
    """A known-bad target is refused even with an unhealthy cluster: it is the first check."""
    inv = make_inventory(tmp_path, version="3.4.23")
    cluster = view(inv, down={"etcd2"}, version="3.4.23")
    reason, code, _ = refusal(plan_upgrade(inv, cluster, "3.5.0"))
    assert reason.startswith("known-bad-version") and code == 5


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("3.5", "invalid etcd version '3.5'"),
        ("v3.5.18", "write the version without the leading v: 3.5.18"),
        ("3.6.0-rc.1", "etcd 3.6.0-rc.1 is a pre-release"),
        ("3.3.27", "etcd 3.3.27 is not supported"),
    ],
)
def test_a_target_this_tool_does_not_deploy_is_a_usage_error(
    tmp_path: Path, target: str, message: str
) -> None:
    inv = make_inventory(tmp_path)
    with pytest.raises(UsageError, match=re.escape(message)):
        plan_target(inv, target, allow_known_bad=False)


def test_plain_http_release_needs_the_targets_sha256_pinned(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path)
    pins = {"3.5.17/amd64": "ab" * 32}
    plain = replace(
        inv, cluster=replace(inv.cluster, release_url="http://192.0.2.1/etcd", release_sha256=pins)
    )
    with pytest.raises(UsageError, match=re.escape("pin the sha256 of etcd 3.5.18's tarballs")):
        plan_target(plain, "3.5.18", allow_known_bad=False)
    pins["3.5.18/amd64"] = "cd" * 32
    assert plan_target(plain, "3.5.18", allow_known_bad=False) == Plan("upgrade")


@pytest.mark.parametrize(
    ("flags", "target", "message"),
    [
        (
            {"enable-v2": "false"},
            "3.6.14",
            "cluster.flags.enable-v2: --enable-v2 was removed in "
            "etcd 3.6 (target 3.6.14): the v2 API is gone: remove the key",
        ),
        (
            {"proxy-refresh-interval": "30000"},
            "3.6.0",
            "cluster.flags.proxy-refresh-interval: "
            "--proxy-refresh-interval was removed in etcd 3.6",
        ),
        (
            {"discovery-proxy": "http://192.0.2.1:8080"},
            "3.7.1",
            "cluster.flags.discovery-proxy: --discovery-proxy was removed in etcd 3.7 "
            "(target 3.7.1): v2 discovery is gone: remove the key",
        ),
    ],
)
def test_flags_the_target_refuses_stop_the_upgrade_before_any_call(
    tmp_path: Path, flags: dict[str, str], target: str, message: str
) -> None:
    """plan_target runs before the first connection: the target's env for every member is
    built from these flags, so one that the target refuses ends the run with nothing
    touched (the rolling steps would otherwise swap binaries first)."""
    version = "3.6.11" if "discovery-proxy" in flags else "3.5.32"
    inv = make_inventory(tmp_path, version=version, flags=flags)
    with pytest.raises(UsageError) as caught:
        plan_target(inv, target, allow_known_bad=False)
    assert str(caught.value).startswith(f"{inv.path}: {message}")
    assert str(caught.value).endswith("; nothing was changed")


def test_flags_the_inventorys_own_version_refuses_are_found_at_load(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"cluster\.flags\.enable-v2: --enable-v2 was removed"):
        make_inventory(tmp_path, version="3.6.14", flags={"enable-v2": "false"})
    with pytest.raises(InventoryError, match=r"cluster\.flags\.feature-gates: feature gates need"):
        make_inventory(tmp_path, version="3.5.30", flags={"feature-gates": "X=true"})


def test_plain_http_on_this_machine_needs_no_pin(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, release_url="http://127.0.0.1:8080/etcd")
    assert plan_target(inv, "3.5.18", allow_known_bad=False).refusals == ()


def test_plan_lines(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.5.16")
    plan = plan_upgrade(inv, view(inv, leader="etcd2", version="3.5.16"), "3.5.17")
    assert plan.lines() == [
        "[release] fetch etcd 3.5.17 for each host's architecture, verified "
        "(before any member changes)",
        "[backup] snapshot of the leader into the state dir "
        "(first: the way back from the patch upgrade 3.5.16 -> 3.5.17, one member at a time)",
        "[upgrade etcd1] install etcd 3.5.17 and restart (runs etcd 3.5.16) [quorum]",
        "[upgrade etcd3] install etcd 3.5.17 and restart (runs etcd 3.5.16) [quorum]",
        "[upgrade etcd2] install etcd 3.5.17 and restart "
        "(runs etcd 3.5.16; leader: leadership handed over first) [quorum]",
        f'[inventory] set etcd_version = "3.5.17" in {inv.path} '
        "(once every member runs etcd 3.5.17)",
    ]


def test_from_35_to_36_every_members_v2_store_is_checked_before_anything(
    tmp_path: Path,
) -> None:
    inv = make_inventory(tmp_path, version="3.5.32")
    plan = plan_upgrade(inv, view(inv, leader="etcd1", version="3.5.32"), "3.6.14")
    assert plan.refusals == ()
    assert steps(plan)[:4] == [
        ("v2store", name, "check the v2 store holds membership only (etcdutl check v2store)")
        for name in ("etcd1", "etcd2", "etcd3")
    ] + [("release", None, "fetch etcd 3.6.14 for each host's architecture, verified")]
    checks = plan.steps[:3]
    assert all(s.parallel and not s.changes and s.args["version"] == "3.6.14" for s in checks)


def test_a_patch_upgrade_has_no_v2_store_check(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.5.16")
    plan = plan_upgrade(inv, view(inv, version="3.5.16"), "3.5.30")
    assert not [s for s in plan.steps if s.phase == "v2store"]
