"""`backup schedule`'s planner, from data: what each host gets (or loses with --off), the
local record, and a bad --every refused before any host is touched. No network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.core.errors import UsageError
from orchestrator.core.inventory import Inventory
from orchestrator.core.planners.schedule import plan_schedule
from tests.unit.helpers import make_inventory

RECORD = "/state/backup-schedule.json"


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return make_inventory(tmp_path)


def test_every_host_gets_the_timer_then_the_schedule_is_recorded(inv: Inventory) -> None:
    plan = plan_schedule(inv, every="1h", keep=2, off=False, record=RECORD)
    assert [(s.phase, s.host) for s in plan.steps] == [
        ("schedule", "etcd1"),
        ("schedule", "etcd2"),
        ("schedule", "etcd3"),
        ("record", None),
    ]
    assert all(s.parallel for s in plan.steps[:3]) and not plan.steps[3].parallel
    assert not any(s.destructive for s in plan.steps) and plan.exit_code == 10
    files = plan.steps[0].args["files"]
    assert [(f.path, f.mode) for f in files] == [
        ("/opt/bin/etcd-backup.sh", 0o700),
        ("/etc/systemd/system/etcd-backup.service", 0o644),
        ("/etc/systemd/system/etcd-backup.timer", 0o644),
    ]
    assert b"OnUnitActiveSec=1h" in files[2].content
    assert b"etcd1" in files[0].content and b"etcd2" in plan.steps[1].args["files"][0].content
    assert json.loads(plan.steps[3].args["data"]) == {
        "every": "1h",
        "keep": 2,
        "folder": "/var/backups/etcd",
    }
    assert plan.lines()[:4] == [
        "[schedule etcd1] install the backup timer: a snapshot every 1h into "
        "/var/backups/etcd, keeping the last 2 (written whole, the timer (re)started)",
        "    ~ /opt/bin/etcd-backup.sh (0700)",
        "    ~ /etc/systemd/system/etcd-backup.service (0644)",
        "    ~ /etc/systemd/system/etcd-backup.timer (0644)",
    ]
    assert plan.lines()[-1] == f"[record] record the schedule in {RECORD} (every 1h, keep 2)"


def test_off_removes_the_timer_and_the_record_and_keeps_the_snapshots(inv: Inventory) -> None:
    plan = plan_schedule(inv, every="not checked", keep=10, off=True, record=RECORD)
    assert [s.line() for s in plan.steps] == [
        *(
            f"[schedule etcd{i}] remove the backup timer, its service and "
            "/opt/bin/etcd-backup.sh (--off; the snapshots in /var/backups/etcd stay)"
            for i in (1, 2, 3)
        ),
        f"[record] remove {RECORD} (--off)",
    ]
    assert all("files" not in s.args for s in plan.steps) and plan.steps[-1].args["off"]


@pytest.mark.parametrize("every", ["0m", "30", "1 h", "1w", ""])
def test_an_interval_systemd_does_not_take_is_a_usage_error(inv: Inventory, every: str) -> None:
    with pytest.raises(UsageError, match="--every: expected a time span"):
        plan_schedule(inv, every=every, keep=10, off=False)
