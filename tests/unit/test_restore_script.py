"""The restore scripts: the member is restored next to the data dir (the snapshot arrived
whole, etcd's own restore succeeded) before anything stops; then, once every host got that
far and etcd is stopped, the old data is moved aside (inside a mount point), never
deleted, and the restored member put in its place."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.commands.restore import stage_script, swap_script
from orchestrator.core.etcd_unit import STOP_IF_RUNNING as STOP
from tests.unit.helpers import MARKER, make_inventory

SHA = "ab" * 32


def scripts(tmp_path: Path, *, mount_point: bool) -> tuple[str, str]:
    inv = make_inventory(tmp_path)
    stage = stage_script(inv, inv.hosts[0], "demo-1", SHA, None, False, mount_point=mount_point)
    swap = swap_script(inv, "demo-1", "20261203", MARKER, mount_point=mount_point)
    return stage, swap


@pytest.mark.parametrize("mount_point", [False, True])
def test_nothing_stops_before_the_file_and_the_restore_are_good(
    tmp_path: Path, mount_point: bool
) -> None:
    stage, swap = scripts(tmp_path, mount_point=mount_point)
    for text in (stage, swap):
        assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0
    assert "systemctl stop" not in stage and "mountpoint" not in stage and "chown" not in stage
    assert "snapshot restore" not in swap and "sha256sum" not in swap
    text = "\n".join([stage, STOP, swap])  # the order a run takes them in, on every host
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
    stage_dir = (
        "/var/lib/etcd/.etcd-deploy-restore-demo-1"
        if mount_point
        else "/var/lib/etcd.etcd-deploy-restore-demo-1"
    )
    assert f"--data-dir {stage_dir} " in stage
    # Nothing moves aside unless the restored member is there; etcd is stopped again first.
    assert swap.index(f"test -d {stage_dir}/member") < swap.index(STOP) < swap.index("mountpoint")


def test_the_swap_keeps_the_old_data_and_puts_the_restored_member_in(tmp_path: Path) -> None:
    """Run for real in a temp dir (no mount point, no systemd): the old data dir is renamed
    aside, the restored member takes its place, and a second swap without a restored
    member changes nothing."""
    data = tmp_path / "data"
    inv = make_inventory(tmp_path)  # a data dir in /tmp is refused by the inventory rules:
    inv = replace(inv, cluster=replace(inv.cluster, data_dir=str(data)))
    (data / "member").mkdir(parents=True)
    (data / "member" / "old").write_text("old")
    (tmp_path / "data.etcd-deploy-restore-demo-1" / "member").mkdir(parents=True)
    (tmp_path / "data.etcd-deploy-restore-demo-1" / "member" / "new").write_text("new")
    script = swap_script(inv, "demo-1", "20261203", MARKER, mount_point=False)
    # No root, no etcd user, no systemd here: only the moves are tried.
    script = "\n".join(
        line
        for line in script.splitlines()
        if not line.startswith(("chown", "systemctl", "mountpoint"))
    ).replace("if mountpoint -q", "if false && mountpoint -q")
    run = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "data.before-restore-20261203" / "member" / "old").read_text() == "old"
    assert (data / "member" / "new").read_text() == "new"
    assert run.stdout.split()[-1] == str(tmp_path / "data.before-restore-20261203")
    again = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert again.returncode != 0 and "no restored member" in again.stderr
    assert (data / "member" / "new").read_text() == "new"
