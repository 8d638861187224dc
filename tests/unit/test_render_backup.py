"""Scheduled backups on the hosts: script, service and timer (goldens), and the script run
for real with sh against a fake etcdctl.sh.

Regenerate the goldens after an intended change with:
    UPDATE_GOLDEN=1 pytest tests/unit/test_render_backup.py
and review the diff.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.core.errors import UsageError
from orchestrator.core.render import (
    render_backup_script,
    render_backup_service,
    render_backup_timer,
)
from tests.unit.test_render import HEADER, check_golden, host, make_inv

FOLDER = "/var/backups/etcd"
SCRIPT = "/opt/bin/etcd-backup.sh"
Run = Callable[..., subprocess.CompletedProcess[str]]

# A stand-in for the etcdctl.sh wrapper: `snapshot save FILE` writes FILE the way etcdctl
# does (through FILE.part); FAKE_FAIL=1 fails like an unreachable member; FAKE_EMPTY=1
# "succeeds" without writing anything.
FAKE_ETCDCTL = """#!/bin/sh
[ "$1 $2" = "snapshot save" ] || { echo "unexpected: $*" >&2; exit 2; }
echo "snapshot save called" >&2
if [ "${FAKE_FAIL:-}" = 1 ]; then
	echo "Error: context deadline exceeded" >&2
	exit 1
fi
[ "${FAKE_EMPTY:-}" = 1 ] && exit 0
printf 'snapshot bytes' > "$3.part"
mv "$3.part" "$3"
echo "Snapshot saved at $3"
"""


# ------------------------------------------------------------------------------ goldens


def test_script_golden() -> None:
    inv = make_inv()
    text = render_backup_script(inv, inv.hosts[0], keep=7, folder=FOLDER)
    assert text.startswith("#!/bin/sh\n" + HEADER + "\n")
    check_golden("etcd-backup.sh", text)


def test_service_golden() -> None:
    text = render_backup_service(make_inv(), SCRIPT, FOLDER)
    assert text.startswith(HEADER + "\n")
    check_golden("etcd-backup.service", text)


def test_timer_golden() -> None:
    text = render_backup_timer(make_inv(), "6h")
    assert text.startswith(HEADER + "\n")
    check_golden("etcd-backup.timer", text)


def test_renders_are_deterministic() -> None:
    inv = make_inv()
    h = inv.hosts[1]
    assert render_backup_script(inv, h, keep=3, folder=FOLDER) == render_backup_script(
        inv, h, keep=3, folder=FOLDER
    )


# ------------------------------------------------------------------------------ script


def test_script_is_valid_sh() -> None:
    inv = make_inv()
    text = render_backup_script(inv, inv.hosts[0], keep=7, folder=FOLDER)
    for shell in ("sh", "dash", "bash"):
        if shutil.which(shell) is None:
            continue
        proc = subprocess.run([shell, "-n"], input=text, text=True, capture_output=True)
        assert proc.returncode == 0, f"{shell}: {proc.stderr}"


def test_script_uses_the_host_name_and_install_dir() -> None:
    inv = make_inv(host("db-a", "10.0.0.5"), install_dir="/usr/local/bin")
    text = render_backup_script(inv, inv.hosts[0], keep=2, folder="/srv/backup/")
    assert '/usr/local/bin/etcdctl.sh snapshot save "$f.part"' in text
    assert 'f="/srv/backup/prod-db-a-$(date -u +%Y%m%dT%H%M%S.%NZ).db"' in text
    assert "keep=2\n" in text
    assert "dir=/srv/backup\n" in text


@pytest.mark.parametrize("keep", [0, -1, True, "3", 2.0])
def test_script_refuses_bad_keep(keep: object) -> None:
    inv = make_inv()
    with pytest.raises(UsageError, match="--keep"):
        render_backup_script(inv, inv.hosts[0], keep=keep, folder=FOLDER)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("folder", "why"),
    [
        ("relative/dir", "absolute path"),
        ("/srv/my backups", "absolute path"),
        ("/srv/$(reboot)", "absolute path"),
        ("/", "not /"),
        ("/var/lib/etcd", "outside the etcd data dir"),
        ("/var/lib/etcd/backups", "outside the etcd data dir"),
        ("/var/lib", "outside the etcd data dir"),
    ],
)
def test_script_refuses_bad_folder(folder: str, why: str) -> None:
    inv = make_inv()
    with pytest.raises(UsageError, match="--folder") as exc:
        render_backup_script(inv, inv.hosts[0], keep=3, folder=folder)
    assert why in str(exc.value)


def test_data_dir_prefix_is_not_inside() -> None:
    inv = make_inv()
    render_backup_script(inv, inv.hosts[0], keep=3, folder="/var/lib/etcd-backups")


# ------------------------------------------------------------------------------ script run


@pytest.fixture
def runner(tmp_path: Path) -> tuple[Run, Path]:
    """(run(env) -> CompletedProcess, backup folder) for a rendered script using a fake
    etcdctl.sh, keeping 2."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "etcdctl.sh"
    fake.write_text(FAKE_ETCDCTL)
    fake.chmod(0o755)
    folder = tmp_path / "backups" / "etcd"
    inv = make_inv(install_dir=str(bin_dir))
    script = tmp_path / "etcd-backup.sh"
    script.write_text(render_backup_script(inv, inv.hosts[0], keep=2, folder=str(folder)))

    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(script)],
            env={"PATH": os.environ["PATH"], **env},
            capture_output=True,
            text=True,
            timeout=30,
        )

    return run, folder


def test_script_runs_and_keeps_the_newest(runner: tuple[Run, Path]) -> None:
    run, folder = runner
    # Other hosts' backups and unrelated files in the same folder are never pruned.
    folder.mkdir(parents=True)
    neighbours = [
        "prod-etcd-1-b-20000101T000000.000000000Z.db",  # host "etcd-1-b"
        "prod-etcd-2-20000101T000000.000000000Z.db",
        "notes.txt",
    ]
    for name in neighbours:
        (folder / name).write_text("keep me")
    stale = folder / "prod-etcd-1-20000101T000000.000000000Z.db.part"
    stale.write_text("killed run")
    printed = []
    for _ in range(3):
        proc = run()
        assert proc.returncode == 0, proc.stderr
        assert "snapshot save called" in proc.stderr
        assert "Snapshot saved" in proc.stderr  # etcdctl's stdout goes to stderr
        lines = proc.stdout.splitlines()
        assert len(lines) == 1
        printed.append(lines[0])
    assert len(set(printed)) == 3
    mine = sorted(p.name for p in folder.iterdir() if p.name.startswith("prod-etcd-1-2"))
    assert mine == sorted(Path(p).name for p in printed[1:])
    assert all(Path(p).read_text() == "snapshot bytes" for p in printed[1:])
    assert not [p for p in folder.iterdir() if p.name.endswith(".part")]
    assert sorted(p.name for p in folder.iterdir()) == sorted(mine + neighbours)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert Path(printed[-1]).stat().st_mode & 0o777 == 0o600
    assert Path(printed[-1]).name.startswith("prod-etcd-1-")
    assert printed == sorted(printed)  # names sort by time


def test_script_failure_keeps_old_backups(runner: tuple[Run, Path]) -> None:
    run, folder = runner
    for _ in range(2):
        assert run().returncode == 0
    before = sorted(folder.iterdir())
    proc = run(FAKE_FAIL="1")
    assert proc.returncode != 0
    assert "context deadline exceeded" in proc.stderr
    assert proc.stdout == ""
    assert sorted(folder.iterdir()) == before


def test_script_refuses_an_empty_snapshot(runner: tuple[Run, Path]) -> None:
    run, folder = runner
    for _ in range(2):
        assert run().returncode == 0
    before = sorted(folder.iterdir())
    proc = run(FAKE_EMPTY="1")
    assert proc.returncode == 1
    assert "etcdctl wrote no snapshot" in proc.stderr
    assert sorted(folder.iterdir()) == before


# ------------------------------------------------------------------------------ service


def test_service_runs_the_script_as_root_sandboxed() -> None:
    text = render_backup_service(make_inv(), "/usr/local/sbin/etcd-backup", "/srv/backups/")
    lines = text.splitlines()
    assert "Type=oneshot" in lines
    assert "ExecStart=/usr/local/sbin/etcd-backup" in lines
    assert "ConditionPathIsDirectory=/srv/backups" in lines
    assert "ReadWritePaths=/srv/backups" in lines
    assert "ProtectSystem=strict" in lines
    assert "PrivateTmp=yes" in lines
    assert "NoNewPrivileges=yes" in lines
    assert "Nice=10" in lines
    assert "IOSchedulingClass=idle" in lines
    assert not [line for line in lines if line.startswith(("User=", "Group=", "DynamicUser="))]


def test_service_in_a_home_folder_keeps_it_writable() -> None:
    text = render_backup_service(make_inv(), SCRIPT, "/root/etcd-backups")
    assert "ProtectHome=read-only\n" in text
    assert "ReadWritePaths=/root/etcd-backups\n" in text


@pytest.mark.parametrize("folder", ["/tmp/b", "/var/tmp", "/run/backups", "/dev/shm/x"])
def test_service_refuses_volatile_folders(folder: str) -> None:
    with pytest.raises(UsageError, match="would be lost"):
        render_backup_service(make_inv(), SCRIPT, folder)


def test_service_refuses_odd_paths() -> None:
    with pytest.raises(UsageError, match="backup script path"):
        render_backup_service(make_inv(), "etcd-backup.sh", FOLDER)
    with pytest.raises(UsageError, match="--folder"):
        render_backup_service(make_inv(), SCRIPT, "/var/lib/etcd/snap")


# ------------------------------------------------------------------------------ timer


@pytest.mark.parametrize("every", ["30s", "30m", "45min", "1h", "6h", "1d"])
def test_timer_every(every: str) -> None:
    lines = render_backup_timer(make_inv(), every).splitlines()
    assert f"OnUnitActiveSec={every}" in lines
    assert "OnActiveSec=1min" in lines
    assert "RandomizedDelaySec=30s" in lines
    assert "WantedBy=timers.target" in lines
    assert not [line for line in lines if line.startswith("Persistent=")]


@pytest.mark.parametrize(
    "every",
    [
        "",
        "6",
        "h",
        "0h",
        "00m",
        "1.5h",
        "6 h",
        " 6h",
        "6h\n",
        "6H",
        "1w",
        "-1h",
        "1h30m",
        "\uff16h",
    ],
)
def test_timer_refuses_bad_every(every: str) -> None:
    with pytest.raises(UsageError, match=r"^--every: "):
        render_backup_timer(make_inv(), every)
