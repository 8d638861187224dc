"""The restore script: nothing stops before the snapshot arrived whole and etcd's own
restore succeeded; the old data is moved aside (inside a mount point), never deleted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.commands.restore import restore_script
from orchestrator.engine.context import RunContext
from orchestrator.ui import UI
from tests.unit.helpers import make_inventory

SHA = "ab" * 32


def script(tmp_path: Path, *, mount_point: bool) -> str:
    inv = make_inventory(tmp_path)
    ctx = RunContext(inv, UI())
    return restore_script(
        ctx, inv.hosts[0], "demo-1", SHA, "20261203", None, False, mount_point=mount_point
    )


@pytest.mark.parametrize("mount_point", [False, True])
def test_nothing_stops_before_the_file_and_the_restore_are_good(
    tmp_path: Path, mount_point: bool
) -> None:
    text = script(tmp_path, mount_point=mount_point)
    assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0
    steps = [
        "cat > /var/tmp/etcd-deploy-restore-demo-1.db",
        f"printf '%s  %s\\n' {SHA} /var/tmp/etcd-deploy-restore-demo-1.db | sha256sum -c",
        "snapshot restore",
        "systemctl stop etcd.service",
        "mountpoint -q /var/lib/etcd",
        "chown -R etcd:etcd /var/lib/etcd",
        "> /var/lib/etcd/.etcd-deploy",
    ]
    where = [text.index(step) for step in steps]
    assert where == sorted(where)
    assert "rm -rf /var/lib/etcd\n" not in text  # the old data is never deleted
    stage = (
        "/var/lib/etcd/.etcd-deploy-restore-demo-1"
        if mount_point
        else "/var/lib/etcd.etcd-deploy-restore-demo-1"
    )
    assert f"--data-dir {stage} " in text
