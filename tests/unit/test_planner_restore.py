"""`restore`'s (and `up --from-snapshot`'s) planner, from data: the safety order (nothing
stops before the snapshot was checked here and on every host), where old data goes, the
restore flags, and the refusals. No network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.core.facts import HostFacts
from orchestrator.core.inventory import Inventory
from orchestrator.core.plan import Plan
from orchestrator.core.planners.restore import (
    RestoreObserved,
    SnapshotCheck,
    plan_restore,
    stage_dir,
)
from tests.unit.helpers import make_inventory
from tests.unit.identity_facts import host, observed

SHA = "ab" * 32
SNAP = SnapshotCheck("/backups/demo-1.db", "demo-1.db", SHA, 1001, 1000)
TOKEN = "demo-00112233aabb"
STAMP = "20261203101010"


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return make_inventory(tmp_path)


def obs(
    inv: Inventory,
    facts: dict[str, HostFacts] | None = None,
    *,
    snapshot: SnapshotCheck = SNAP,
    **per_host: HostFacts,
) -> RestoreObserved:
    return RestoreObserved(snapshot, observed(inv, facts, **per_host), TOKEN, STAMP)


def fresh(inv: Inventory, name: str) -> HostFacts:
    return host(inv, name, data="none", env=False, running=False)


def phases(plan: Plan) -> list[tuple[str, str | None]]:
    return [(s.phase, s.host) for s in plan.steps]


def test_a_typical_restore_onto_a_cluster_of_ours(inv: Inventory) -> None:
    plan = plan_restore(inv, obs(inv))
    names = ["etcd1", "etcd2", "etcd3"]
    assert phases(plan) == [
        ("verify", None),
        ("certs", None),
        ("release", None),
        *(("install", n) for n in names),
        *(("restore", n) for n in names),
        *(("stop", n) for n in names),
        *(("aside", n) for n in names),
        ("start", None),
        ("healthy", None),
    ]
    assert plan.exit_code == 10 and not plan.refusals
    assert plan.lines() == [
        f"[verify] demo-1.db: sha256 {SHA}, revision 1001, 1000 keys (checked on this "
        "machine, before anything stops)",
        "[certs] issue what each host lacks from the local CA (a CA is made when there is "
        "none; valid certs are reused) (the new cluster's members)",
        "[release] fetch etcd 3.5.30 for x86_64, verified (before any host changes; only "
        "when a host lacks it)",
        *(
            f"[install {n}] etcd 3.5.30, its certs and config for member {n} of a new "
            "cluster (only what differs from the host's files)"
            for n in names
        ),
        *(
            f"[restore {n}] send demo-1.db, check its sha256 on the host, restore member {n} "
            "from it next to /var/lib/etcd (before anything stops)"
            for n in names
        ),
        *(f"[stop {n}] stop etcd (every member's restored data is ready)" for n in names),
        *(
            f"[aside {n}] move /var/lib/etcd aside to /var/lib/etcd.before-restore-{STAMP} "
            "(never deleted); put the restored member in its place, marked as this "
            "cluster's (the snapshot replaces its data) [destructive]"
            for n in names
        ),
        "[start] start etcd on etcd1, etcd2, etcd3: a new cluster from the restored data "
        "(with a new cluster token)",
        "[healthy] wait until the cluster is healthy [quorum]",
    ]
    json.dumps(plan.as_data())


def test_nothing_stops_before_every_host_checked_the_snapshot(inv: Inventory) -> None:
    plan = plan_restore(inv, obs(inv), bump_revision=1000, mark_compacted=True)
    order = [s.phase for s in plan.steps]
    last_check = max(i for i, p in enumerate(order) if p in ("verify", "restore", "check"))
    first_stop = order.index("stop")
    assert last_check < first_stop < min(i for i, p in enumerate(order) if p == "aside")
    assert order.index("install") < order.index("check") < order.index("restore")
    # What is destroyed (the old data's place) is flagged; a stop or a restore aside is not.
    assert {s.phase for s in plan.steps if s.destructive} == {"aside"}
    assert [s.phase for s in plan.steps if not s.changes] == [
        "verify",
        "release",
        "check",
        "healthy",
    ]


def test_the_restore_flags_are_checked_first_and_passed_on(inv: Inventory) -> None:
    plan = plan_restore(inv, obs(inv), bump_revision=1000, mark_compacted=True)
    check = next(s for s in plan.steps if s.phase == "check")
    assert check.host == "etcd1" and "--bump-revision and --mark-compacted" in check.action
    restore = next(s for s in plan.steps if s.phase == "restore")
    assert restore.action.endswith("(--bump-revision 1000, --mark-compacted)")
    assert (restore.args["bump_revision"], restore.args["mark_compacted"]) == (1000, True)
    assert "check" not in [s.phase for s in plan_restore(inv, obs(inv)).steps]


def test_where_the_old_data_goes(inv: Inventory) -> None:
    plan = plan_restore(
        inv,
        obs(
            inv,
            etcd1=host(inv, "etcd1", data="mount"),
            etcd2=fresh(inv, "etcd2"),
        ),
    )
    aside = {s.host: s for s in plan.steps if s.phase == "aside"}
    assert aside["etcd1"].action.startswith(
        f"move /var/lib/etcd aside to /var/lib/etcd/.etcd-deploy-aside-before-restore-{STAMP} "
    )
    assert aside["etcd2"].action == (
        "put the restored member in /var/lib/etcd, marked as this cluster's"
    )
    assert aside["etcd3"].action.startswith(
        f"move /var/lib/etcd aside to /var/lib/etcd.before-restore-{STAMP} "
    )
    stage = {s.host: s for s in plan.steps if s.phase == "restore"}
    assert "inside /var/lib/etcd (a mount point)" in stage["etcd1"].action
    assert [stage[n].args["mount_point"] for n in ("etcd1", "etcd2")] == [True, False]
    assert aside["etcd1"].args == {
        "token": TOKEN,
        "sha256": SHA,
        "stamp": STAMP,
        "mount_point": True,
    }
    assert stage_dir("/var/lib/etcd", TOKEN, mount_point=True) == (
        f"/var/lib/etcd/.etcd-deploy-restore-{TOKEN}"
    )
    assert stage_dir("/var/lib/etcd", TOKEN, mount_point=False) == (
        f"/var/lib/etcd.etcd-deploy-restore-{TOKEN}"
    )


def test_one_release_step_per_architecture(inv: Inventory) -> None:
    plan = plan_restore(inv, obs(inv, etcd2=host(inv, "etcd2", arch="aarch64")))
    assert [s.args["arch"] for s in plan.steps if s.phase == "release"] == ["aarch64", "x86_64"]


def test_a_snapshot_this_machine_could_only_hash(inv: Inventory) -> None:
    plan = plan_restore(inv, obs(inv, snapshot=SnapshotCheck("/b/x.db", "x.db", SHA)))
    assert plan.steps[0].action == f"x.db: sha256 {SHA}, integrity hash ok"


def test_a_host_that_is_not_ours_is_refused_and_nothing_overrides_it(inv: Inventory) -> None:
    plan = plan_restore(inv, obs(inv, etcd2=host(inv, "etcd2", data="foreign")))
    assert not plan.steps and plan.exit_code == 5
    (refusal,) = plan.refusals
    assert refusal.override == ""
    assert refusal.reason.startswith(
        "restore refused: etcd2: /var/lib/etcd belongs to cluster 'lab'. These hosts may hold "
        "another cluster (a wrong inventory or address?). Check the inventory: restore replaces "
        "the data of every host it names."
    )
    assert str(plan.refusal_error()).endswith("then up --from-snapshot; nothing was changed")


def test_from_snapshot_only_onto_hosts_without_etcd(inv: Inventory) -> None:
    bare = {h.name: fresh(inv, h.name) for h in inv.hosts}
    plan = plan_restore(inv, obs(inv, bare), fresh_only=True)
    assert plan.exit_code == 10 and not plan.refusals
    assert all(s.action.startswith("put the restored") for s in plan.steps if s.phase == "aside")
    busy = plan_restore(inv, obs(inv, bare, etcd2=host(inv, "etcd2")), fresh_only=True)
    assert [r.reason for r in busy.refusals] == [
        "--from-snapshot makes a brand-new cluster, but etcd2 already hold etcd data or run "
        "etcd; to replace that data: etcd-deploy restore /backups/demo-1.db --yes"
    ]
    assert not busy.steps
    # The same hosts restore fine: that is `restore`'s job.
    assert not plan_restore(inv, obs(inv, bare, etcd2=host(inv, "etcd2"))).refusals


def test_from_snapshot_names_a_host_not_ours_first(inv: Inventory) -> None:
    plan = plan_restore(inv, obs(inv, etcd2=host(inv, "etcd2", data="foreign")), fresh_only=True)
    assert [r.reason.split(":")[0] for r in plan.refusals] == ["restore refused"]
