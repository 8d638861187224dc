"""The operations machine's backup service and timer: golden files, systemd's own parser
(`systemd-analyze verify`) on them, quoting, and bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.core.errors import UsageError
from orchestrator.core.ops_units import (
    render_offsite_service,
    render_offsite_timer,
    systemd_quote,
    unit_name,
)
from tests.unit.test_render import check_golden

HEADER = "# Written by `etcd-deploy backup timer` (cluster prod) for the operations machine."
COMMAND = [
    "/usr/local/bin/etcd-deploy",
    "backup",
    "-i",
    "/srv/etcd/inventory.toml",
    "--to",
    "s3://etcd-backups/prod/",
    "--encrypt-to",
    "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq",
    "--encrypt-to",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@laptop",
    "--keep",
    "48",
    "--keep-daily",
    "14",
]


def test_golden_service_and_timer() -> None:
    service = render_offsite_service("prod", COMMAND, "/etc/etcd-deploy/backup.env", header=HEADER)
    check_golden("etcd-backup-offsite.service", service)
    check_golden("etcd-backup-offsite.timer", render_offsite_timer("prod", "hourly", header=HEADER))
    assert unit_name("prod") == "etcd-backup-prod"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize(
    ("calendar", "ok"),
    [("hourly", True), ("*-*-* 0/6:00:00", True), ("Mon..Fri 02:30", True), ("every 5x", False)],
)
def test_systemd_reads_them(tmp_path: Path, calendar: str, ok: bool) -> None:
    """systemd's own parser: every setting known, the timer's calendar event valid, the
    command's binary present (the test's Python stands in for etcd-deploy)."""
    name = unit_name("prod")
    command = [sys.executable, *COMMAND[1:]]
    (tmp_path / f"{name}.service").write_text(
        render_offsite_service("prod", command, "/etc/etcd-deploy/backup.env", header=HEADER)
    )
    (tmp_path / f"{name}.timer").write_text(render_offsite_timer("prod", calendar, header=HEADER))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"{name}.service", f"{name}.timer"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert (proc.returncode == 0) is ok, proc.stderr
    if ok:
        assert proc.stderr.strip() == "", proc.stderr


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [
        ("plain", "plain"),
        ("/srv/etcd/inventory.toml", "/srv/etcd/inventory.toml"),
        ("ssh-ed25519 AAAA ops", '"ssh-ed25519 AAAA ops"'),
        ("50%", '"50%%"'),
        ("$HOME", '"$$HOME"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a\\b", '"a\\\\b"'),
        ("", '""'),
    ],
)
def test_quoting(arg: str, quoted: str) -> None:
    assert systemd_quote(arg) == quoted


def test_bad_input() -> None:
    with pytest.raises(UsageError, match="--on-calendar 'hourly; rm'"):
        render_offsite_timer("prod", "hourly; rm", header=HEADER)
    with pytest.raises(UsageError, match="absolute path"):
        render_offsite_service("prod", ["etcd-deploy"], "/e", header=HEADER)
    with pytest.raises(UsageError, match="newline"):
        render_offsite_service("prod", ["/x", "a\nb"], "/e", header=HEADER)
