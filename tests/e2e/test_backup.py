"""backup, scheduled backups, restore and up --from-snapshot on real hosts."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.e2e.conftest import Cli, unit_started_at
from tests.e2e.load import Writer, put_keys, read_prefix
from tests.lab.driver import HOSTS, Lab

THREE = ["etcd1", "etcd2", "etcd3"]
ENDPOINT = f"https://{HOSTS['etcd1']}:2379"


def _pki(cli: Cli) -> Path:
    return cli.inventory.parent / ".etcd-deploy" / "lab" / "pki"


def _backup(cli: Cli) -> dict:
    proc = cli("backup", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_backup_destroy_restore_keeps_every_key(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    put_keys(ENDPOINT, _pki(cli), 1000)
    result = _backup(cli)
    path = Path(result["file"])
    assert path.exists() and path.stat().st_mode & 0o777 == 0o600
    assert result["keys"] >= 1000 and result["revision"] > 1000 and len(result["sha256"]) == 64
    assert not list(path.parent.glob("*.part"))
    assert cli("destroy", "--yes").returncode == 0

    dry = cli("restore", str(path))  # without --yes: its plan, as --dry-run (exit 10)
    assert dry.returncode == 10 and "add --yes" in dry.stderr, dry.stderr
    assert "[restore etcd1] send" in dry.stdout and "[aside etcd3]" in dry.stdout
    assert lab.exec("etcd1", "ls /etc/etcd 2>/dev/null", check=False).stdout == ""
    assert lab.exec("etcd1", "ls /run/etcd-deploy.lock", check=False).returncode != 0

    proc = cli("restore", str(path), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert cli.status()["healthy"]
    keys = read_prefix(ENDPOINT, _pki(cli), "/keys/")
    assert keys == {f"/keys/{i:05d}": f"value-{i}" for i in range(1000)}
    assert cli("plan").returncode == 0  # the restored cluster is what up would build


def test_restore_brings_back_a_cluster_that_lost_quorum(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    put_keys(ENDPOINT, _pki(cli), 100)
    path = _backup(cli)["file"]
    for name in ("etcd2", "etcd3"):
        lab.exec(name, "systemctl stop etcd")
    assert cli("status").returncode == 6
    proc = cli("restore", path, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert cli.status()["healthy"]
    assert len(read_prefix(ENDPOINT, _pki(cli), "/keys/")) == 100
    for name in THREE:  # old data moved aside, never deleted
        aside = lab.exec(name, "ls -d /var/lib/etcd.before-restore-*").stdout.split()
        assert len(aside) == 1


def test_truncated_snapshot_is_refused_before_anything_stops(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    path = Path(_backup(cli)["file"])
    broken = path.with_name("broken.db")
    broken.write_bytes(path.read_bytes()[:-1])
    started = {name: unit_started_at(lab, name) for name in THREE}
    proc = cli("restore", str(broken), "--yes")
    assert proc.returncode == 3, proc.stderr
    assert "broken.db" in proc.stderr and "truncated" in proc.stderr
    assert {name: unit_started_at(lab, name) for name in THREE} == started
    assert cli.status()["healthy"]


def test_scheduled_backups_run_on_the_hosts_and_keep_the_last_n(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    dry = cli("backup", "schedule", "--every", "1h", "--keep", "2", "--dry-run")
    assert dry.returncode == 10 and dry.stdout.count("[schedule etcd") == 3, dry.stderr
    assert lab.exec("etcd1", "systemctl is-enabled etcd-backup.timer", check=False).returncode
    proc = cli("backup", "schedule", "--every", "1h", "--keep", "2")
    assert proc.returncode == 0, proc.stderr
    for name in THREE:
        assert lab.exec(name, "systemctl is-active etcd-backup.timer").stdout.strip() == "active"
    for _ in range(3):
        lab.exec("etcd1", "systemctl start etcd-backup.service")
    files = lab.exec("etcd1", "ls /var/backups/etcd").stdout.split()
    assert len(files) == 2 and all(f.startswith("lab-etcd1-") and f.endswith(".db") for f in files)
    assert lab.exec("etcd1", "stat -c %a /var/backups/etcd").stdout.strip() == "700"
    listed = json.loads(cli("backup", "list", "--json").stdout)["backups"]
    assert sorted(Path(b["name"]).name for b in listed if b["where"] == "etcd1") == sorted(files)
    rows = {m["name"]: m for m in cli.status()["members"]}
    assert rows["etcd1"]["last_backup"] not in (None, "none")
    assert rows["etcd2"]["last_backup"] == "none"
    assert cli("backup", "schedule", "--off").returncode == 0
    assert (
        lab.exec("etcd1", "systemctl is-enabled etcd-backup.timer", check=False).stdout.strip()
        != "enabled"
    )


def test_up_from_snapshot_seeds_a_new_cluster_only_on_fresh_hosts(make_cli) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    put_keys(ENDPOINT, _pki(cli), 200)
    path = _backup(cli)["file"]
    refused = cli("up", "--from-snapshot", path)
    assert refused.returncode == 5 and "restore" in refused.stderr
    assert cli("destroy", "--yes").returncode == 0
    proc = cli("up", "--from-snapshot", path)
    assert proc.returncode == 0, proc.stderr
    assert cli.status()["healthy"]
    assert len(read_prefix(ENDPOINT, _pki(cli), "/keys/")) == 200


def test_backup_under_a_writer_is_consistent(make_cli) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    writer = Writer([f"https://{HOSTS[n]}:2379" for n in THREE], _pki(cli), prefix="/w/").start()
    try:
        while len(writer.acked) < 200:
            time.sleep(0.05)
        acked_before = len(writer.acked)
        path = _backup(cli)["file"]
    finally:
        writer.stop()
    assert cli("restore", path, "--yes").returncode == 0
    restored = sorted(read_prefix(ENDPOINT, _pki(cli), "/w/"))
    # The snapshot is one consistent revision: a gapless prefix of the writer's sequence,
    # holding at least every write acknowledged before the backup began.
    assert restored == [f"/w/{i:08d}" for i in range(len(restored))]
    assert len(restored) >= acked_before
