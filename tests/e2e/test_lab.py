"""The lab is real: real sshd with real host keys, real systemd, real etcd binaries."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import tempfile
from pathlib import Path

import httpx

from tests.lab.driver import HOSTS, Lab


def test_every_host_answers_ssh_with_strict_host_keys(lab: Lab) -> None:
    for name in HOSTS:
        out = lab.ssh(name, "hostname; id -u; command -v python3 || echo no-python").stdout.split()
        assert out == [name, "0", "no-python"]


def test_systemd_is_pid1_and_running(lab: Lab) -> None:
    lab.clean()  # a unit an earlier test left failed would make systemd report "degraded"
    for name in HOSTS:
        proc = lab.ssh(name, "systemctl is-system-running; cat /proc/1/comm", check=False)
        state, pid1 = proc.stdout.split()
        assert pid1 == "systemd"
        if state == "degraded":
            failed = lab.ssh(name, "systemctl --failed --no-legend", check=False).stdout
            raise AssertionError(f"{name} degraded: {failed}")
        assert state == "running"


def test_stopped_host_is_unreachable_and_comes_back(lab: Lab) -> None:
    lab.stop("etcd5")
    try:
        proc = lab.ssh("etcd5", "true", check=False)
        assert proc.returncode == 255
    finally:
        lab.start("etcd5")
    assert lab.ssh("etcd5", "hostname").stdout.strip() == "etcd5"


def test_host_with_wrong_key_is_refused(lab: Lab, tmp_path: Path) -> None:
    lab.write_known_hosts()
    other_key = lab.exec("etcd2", "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{HOSTS['etcd1']} {' '.join(other_key)}\n")
    command = lab.ssh_command("etcd1", "true")
    command[command.index(f"UserKnownHostsFile={lab.known_hosts}")] = f"UserKnownHostsFile={wrong}"
    proc = subprocess.run(command, capture_output=True, text=True)
    assert proc.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr


def test_mirror_serves_verified_real_etcd(release_mirror: str) -> None:
    for version in ("3.4.23", "3.5.0", "3.5.1", "3.5.16", "3.5.30"):
        name = f"etcd-v{version}-linux-amd64.tar.gz"
        sums = httpx.get(f"{release_mirror}/v{version}/SHA256SUMS").text
        expected = next(line.split()[0] for line in sums.splitlines() if line.endswith(name))
        blob = httpx.get(f"{release_mirror}/v{version}/{name}").content
        assert hashlib.sha256(blob).hexdigest() == expected
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / name
            archive.write_bytes(blob)
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            etcd = Path(tmp) / f"etcd-v{version}-linux-amd64" / "etcd"
            out = subprocess.run([str(etcd), "--version"], capture_output=True, text=True).stdout
            assert f"etcd Version: {version}" in out
