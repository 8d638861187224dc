"""`etcd-deploy up` and friends on real hosts: bootstrap, converge, safety, destroy."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Cli, unit_started_at
from tests.e2e.load import DownSampler
from tests.lab.driver import HOSTS, Lab
from tests.lab.mirror import default_mirror_dir

THREE = ["etcd1", "etcd2", "etcd3"]


def _pki(cli: Cli) -> Path:
    return cli.inventory.parent / ".etcd-deploy" / "lab" / "pki"


def _assert_healthy(cli: Cli, count: int) -> dict:
    status = cli.status()
    assert status["healthy"], status["summary"]
    roles = sorted(m["role"] for m in status["members"])
    assert roles == sorted(["leader"] + ["follower"] * (count - 1))
    return status


def test_up_three_nodes_is_secure_and_idempotent(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    first = cli("up")
    assert first.returncode == 0, first.stderr
    for phase in (
        "[bootstrap] starting a new cluster 'lab' on etcd1",
        "[join etcd2]",
        "[join etcd3]",
        "--etcd-servers=",
    ):
        assert phase in first.stderr + first.stdout
    _assert_healthy(cli, 3)

    # A client without a cert is rejected by every member.
    context = ssl.create_default_context(cafile=str(_pki(cli) / "ca.crt"))
    for name in THREE:
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"https://{HOSTS[name]}:2379/health", verify=context, timeout=5)

    ca_key_sha = hashlib.sha256((_pki(cli) / "ca.key").read_bytes()).hexdigest()
    for name in THREE:
        assert lab.exec(name, "ps -o user= -C etcd").stdout.split() == ["etcd"]
        modes = lab.exec(name, "stat -c '%a %U %n' /etc/etcd/pki/*.key").stdout.splitlines()
        assert len(modes) == 4 and all(m.startswith("600 etcd ") for m in modes), modes
        owners = lab.exec(
            name,
            "stat -c '%a %U %G %n' /var/lib/etcd /etc/etcd/pki /etc/etcd/pki/*.crt "
            "/etc/etcd/etcd.env",
        ).stdout.splitlines()
        assert owners[:2] == ["700 etcd etcd /var/lib/etcd", "700 etcd etcd /etc/etcd/pki"]
        assert owners[-1] == "640 root etcd /etc/etcd/etcd.env"
        crts = owners[2:-1]
        assert len(crts) == 5 and all(c.startswith("644 etcd etcd ") for c in crts), crts
        keys = lab.exec(name, "find / -xdev -type f -name '*.key' -exec sha256sum {} +").stdout
        assert ca_key_sha not in keys and "ca.key" not in keys
        verify = lab.exec(name, "systemd-analyze verify /etc/systemd/system/etcd.service 2>&1")
        assert verify.stdout.strip() == ""
        wrapper = lab.exec(name, "/opt/bin/etcdctl.sh endpoint health 2>&1")
        assert "is healthy" in wrapper.stdout

    started = {name: unit_started_at(lab, name) for name in THREE}
    second = cli("up", "-v")
    assert second.returncode == 0, second.stderr
    assert "bytes on stdin" not in second.stderr  # nothing uploaded
    assert second.stderr.count("no changes:") == 3
    assert {name: unit_started_at(lab, name) for name in THREE} == started
    plan = cli("plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert plan.stdout.count("no changes") == 3


def test_changed_flag_restarts_members_one_at_a_time_leader_last(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    leader = next(m["name"] for m in cli.status()["members"] if m["role"] == "leader")
    before = {name: unit_started_at(lab, name) for name in THREE}

    text = cli.inventory.read_text().replace(
        "[ssh]", "[cluster.flags]\nheartbeat-interval = 150\nelection-timeout = 1500\n\n[ssh]"
    )
    cli.inventory.write_text(text)
    plan = cli("plan")
    assert plan.returncode == 10
    assert "+ETCD_HEARTBEAT_INTERVAL=150" in plan.stdout

    endpoints = [f"https://{HOSTS[n]}:2379" for n in THREE]
    with DownSampler(endpoints, _pki(cli)) as sampler:
        result = cli("up")
    assert result.returncode == 0, result.stderr
    assert sampler.samples > 10 and sampler.most_down <= 1
    after = {name: unit_started_at(lab, name) for name in THREE}
    assert all(after[n] != before[n] for n in THREE), (before, after)
    restarts = [line for line in result.stderr.splitlines() if "] restart etcd (" in line]
    assert len(restarts) == 3 and f"[restart {leader}]" in restarts[-1]
    for name in THREE:
        assert "ETCD_HEARTBEAT_INTERVAL=150" in lab.exec(name, "cat /etc/etcd/etcd.env").stdout
    _assert_healthy(cli, 3)
    assert cli("plan").returncode == 0


def test_five_nodes_and_status_json(make_cli) -> None:
    cli = make_cli(5)
    cli("up", check=True)
    status = _assert_healthy(cli, 5)
    assert [m["name"] for m in status["members"]] == list(HOSTS)
    for member in status["members"]:
        assert member["version"] == "3.5.30" and member["raft_index"] > 0
        assert 364 < member["cert_days_left"] <= 365


def test_parallel_bootstrap_starts_every_member_at_once(make_cli) -> None:
    cli = make_cli(3)
    proc = cli("up", "--parallel-bootstrap")
    assert proc.returncode == 0, proc.stderr
    assert "on etcd1, etcd2, etcd3" in proc.stderr and "[join" not in proc.stderr
    _assert_healthy(cli, 3)
    assert cli("plan").returncode == 0


def test_parallel_bootstrap_forms_the_cluster_without_a_founder_that_fails(
    make_cli, lab: Lab
) -> None:
    """etcd3 goes down while the founders install: etcd1 and etcd2 (a quorum) still form
    the cluster, etcd3 is reported, and a re-run once it is back starts it."""
    cli = make_cli(3)

    def stop_etcd3(line: str, _proc: object) -> None:
        if "[bootstrap] starting" in line:
            lab.stop("etcd3")

    try:
        code, output = cli.run_reacting("up", "--parallel-bootstrap", react=stop_etcd3)
        assert code != 0 and "etcd3" in output.strip().splitlines()[-1], output
        assert "healthy without etcd3" in output, output
        roles = {m["name"]: m["role"] for m in cli.status()["members"]}
        assert {roles["etcd1"], roles["etcd2"]} == {"leader", "follower"}, roles
    finally:
        lab.start("etcd3")
    rerun = cli("up")
    assert rerun.returncode == 0, rerun.stderr
    _assert_healthy(cli, 3)


def test_status_reports_down_member_and_exits_6(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    lab.stop("etcd3")
    try:
        proc = cli("status", "--json")
        assert proc.returncode == 6
        status = json.loads(proc.stdout)
        assert not status["healthy"]
        row = next(m for m in status["members"] if m["name"] == "etcd3")
        assert row["role"] == "down"
    finally:
        lab.start("etcd3")


def test_destroy_removes_everything_but_local_state(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    refused = cli("destroy")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    dry = cli("destroy", "--dry-run")  # no --yes needed: the plan, hosts read without locks
    assert dry.returncode == 10, dry.stderr
    assert [line.split("]")[0] for line in dry.stdout.splitlines()[:3]] == [
        f"[destroy {name}" for name in THREE
    ]
    assert "remove /var/lib/etcd, the on-host backups and the etcd user" in dry.stdout
    assert cli.status()["healthy"]
    for name in THREE:
        assert lab.exec(name, "ls /run/etcd-deploy.lock", check=False).returncode != 0
    assert cli("destroy", "--yes").returncode == 0
    for name in THREE:
        left = lab.exec(
            name,
            "ls /etc/etcd /var/lib/etcd /etc/systemd/system/etcd.service "
            "/opt/bin/etcd 2>/dev/null; id etcd 2>/dev/null",
            check=False,
        )
        assert left.stdout.strip() == ""
    assert (_pki(cli) / "ca.key").exists()


def test_bad_inventory_is_one_line_exit_2(make_cli) -> None:
    cli = make_cli(3)
    cli.inventory.write_text(cli.inventory.read_text().replace("[ssh]", "[ssh]\nprot = 22"))
    proc = cli("up")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "ssh.prot" in lines[0] and str(cli.inventory) in lines[0]


def _untouched(lab: Lab) -> None:
    for name in THREE:
        left = lab.exec(
            name, "id etcd; ls /etc/etcd /opt/bin/etcd /run/etcd-deploy.lock", check=False
        )
        assert left.stdout.strip() == "", (name, left.stdout)


def _one_error(proc: subprocess.CompletedProcess[str], code: int, expected: str) -> None:
    assert proc.returncode == code, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_release_problems_are_one_error_exit_3_and_change_no_host(
    make_cli, lab: Lab, tmp_path: Path
) -> None:
    """A version the mirror does not have, and a tarball whose checksum does not match its
    SHA256SUMS (a local mirror folder, an empty release cache): found before any change."""
    cli = make_cli(3)
    mirror = tmp_path / "tampered"
    shutil.copytree(default_mirror_dir() / "v3.5.30", mirror / "v3.5.30")
    sums = mirror / "v3.5.30" / "SHA256SUMS"
    sums.write_text(re.sub(r"^[0-9a-f]{64}", "0" * 64, sums.read_text(), flags=re.M))
    run = Cli(cli.inventory, dict(cli.env, XDG_CACHE_HOME=str(tmp_path / "empty-cache")))
    text = cli.inventory.read_text()
    cases = [
        (re.sub(r'etcd_version = "[^"]+"', 'etcd_version = "3.5.77"', text), "3.5.77"),
        (
            re.sub(r'release_url = "[^"]+"', f'release_url = "{mirror}"', text),
            "checksum mismatch for etcd-v3.5.30-linux-amd64.tar.gz",
        ),
    ]
    for inventory, expected in cases:
        cli.inventory.write_text(inventory)
        _one_error(run("up"), 3, expected)
        _untouched(lab)


def _known_hosts_for_etcd2(cli: Cli, lab: Lab, replacement: str) -> None:
    """Point the inventory at a copy of the lab's known_hosts whose etcd2 line is
    `replacement` (empty: etcd2 unknown)."""
    known = Path(lab.known_hosts)
    edited = cli.inventory.parent / "known_hosts.edited"
    kept = [ln for ln in known.read_text().splitlines() if not ln.startswith(HOSTS["etcd2"] + " ")]
    edited.write_text("".join(line + "\n" for line in [*kept, replacement] if line))
    cli.inventory.write_text(cli.inventory.read_text().replace(str(known), str(edited)))


def test_unknown_host_key_is_refused_and_nothing_changes(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    _known_hosts_for_etcd2(cli, lab, "")
    proc = cli("up")
    _one_error(proc, 4, "the host key of " + HOSTS["etcd2"] + " is unknown")
    assert "etcd2" in proc.stderr
    _untouched(lab)


def test_changed_host_key_is_refused_and_nothing_changes(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    other = lab.exec("etcd3", "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
    _known_hosts_for_etcd2(cli, lab, f"{HOSTS['etcd2']} {' '.join(other)}")
    proc = cli("up")
    _one_error(proc, 4, "does not match")
    assert "etcd2" in proc.stderr
    _untouched(lab)


def test_second_run_is_refused_by_the_lock_and_stale_lock_is_taken_over(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    hostname = os.uname().nodename
    live = json.dumps(
        {
            "run": "other",
            "control": hostname,
            "pid": sleeper.pid,
            "command": "up",
            "started": int(time.time()),
        }
    )
    lab.exec("etcd2", f"printf '%s\\n' '{live}' > /run/etcd-deploy.lock")
    try:
        proc = cli("up")
        assert proc.returncode == 5
        assert "etcd2: locked by another etcd-deploy run" in proc.stderr
        # The refused run let go of the locks it took on the other hosts.
        assert lab.exec("etcd1", "cat /run/etcd-deploy.lock", check=False).stdout == ""
    finally:
        sleeper.kill()
        sleeper.wait()
    proc = cli("up")
    assert proc.returncode == 0, proc.stderr
    assert "taking over a stale lock" in proc.stderr
    assert lab.exec("etcd2", "cat /run/etcd-deploy.lock", check=False).stdout == ""


def test_a_lost_state_dir_is_refused_even_once_a_new_ca_exists(make_cli, lab: Lab) -> None:
    """The state dir's pki is lost. `status` makes no CA; `up` makes one and refuses, and
    must go on refusing (with that CA on disk), as must `certs renew`: certs of a new CA
    would cut the members apart."""
    cli = make_cli(3)
    cli("up", check=True)
    pki = _pki(cli)
    pki.rename(pki.with_name("pki.lost"))
    on_hosts = {n: lab.exec(n, "sha256sum /etc/etcd/pki/*").stdout for n in THREE}
    status = cli("status")
    assert status.returncode == 3 and "no CA in" in status.stderr, status.stderr
    assert not (pki / "ca.crt").exists()
    for command, why in (
        (["up"], "there was no CA in"),
        (["up"], "none of the CAs in"),
        (["certs", "renew"], "none of the CAs in"),
    ):
        proc = cli(*command)
        assert proc.returncode == 5, proc.stderr
        assert "hold a cluster that trusts another CA, and " + why in proc.stderr, proc.stderr
        assert "restore the state dir" in proc.stderr
    assert {n: lab.exec(n, "sha256sum /etc/etcd/pki/*").stdout for n in THREE} == on_hosts
    shutil.rmtree(pki)
    pki.with_name("pki.lost").rename(pki)
    assert cli("up").returncode == 0
    _assert_healthy(cli, 3)


def test_up_killed_mid_join_converges_on_rerun(make_cli) -> None:
    cli = make_cli(3)
    assert cli.killed_at("[join etcd2] added as learner", "up") == -signal.SIGKILL
    rerun = cli("up")
    assert rerun.returncode == 0, rerun.stderr
    _assert_healthy(cli, 3)


def test_wiped_member_is_refused_then_replaced_with_force(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    lab.exec("etcd3", "systemctl stop etcd && rm -rf /var/lib/etcd/member")
    proc = cli("up")
    assert proc.returncode == 5
    assert "etcd3" in proc.stderr and "still a member" in proc.stderr
    assert "etcd-deploy up --force" in proc.stderr
    forced = cli("up", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "removed stale member" in forced.stderr
    _assert_healthy(cli, 3)


def _lonely_cluster_on(host: str, cli: Cli, lab: Lab, tmp_path: Path, mirror: str) -> None:
    """Another etcd-deploy cluster ("lonely": one member, its own state dir and CA) on `host`."""
    other = tmp_path / "other" / "inventory.toml"
    lab.inventory(other, 1, release_url=mirror)
    text = other.read_text().replace('name = "etcd1"', 'name = "lonely"')
    other.write_text(text.replace(f'"{HOSTS["etcd1"]}"', f'"{HOSTS[host]}"'))
    assert Cli(other, cli.env)("up").returncode == 0


def test_data_this_cluster_did_not_write_is_refused_then_moved_aside_with_force(
    make_cli, lab: Lab, tmp_path: Path, release_mirror: str
) -> None:
    """etcd3 holds the data dir of another single-member cluster ("lonely", its config gone:
    another tool's leftovers). With no cluster of ours running, `up` must not start that data
    under our certs and join the others to it."""
    cli = make_cli(3)
    _lonely_cluster_on("etcd3", cli, lab, tmp_path, release_mirror)
    lab.exec("etcd3", "systemctl stop etcd && rm -rf /etc/etcd")

    proc = cli("up")
    assert proc.returncode == 5, proc.stderr
    assert "etcd3: /var/lib/etcd holds data that this inventory's cluster did not write" in (
        proc.stderr
    )
    for name in ("etcd1", "etcd2"):
        assert lab.exec(name, "ls /etc/etcd /var/lib/etcd", check=False).stdout.strip() == ""
    forced = cli("up", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "moved the old data dir aside to /var/lib/etcd.etcd-deploy-" in forced.stderr
    _assert_healthy(cli, 3)
    kept = lab.exec("etcd3", "ls -d /var/lib/etcd.etcd-deploy-*/member").stdout.strip()
    assert kept


def test_a_new_member_holding_another_clusters_data_joins_only_with_force(
    make_cli, lab: Lab, tmp_path: Path, release_mirror: str
) -> None:
    """etcd4 runs another etcd-deploy cluster (its own CA): add-node refuses it; with --force
    its etcd is stopped, its data moved aside, and it joins ours."""
    cli = make_cli(3)
    _lonely_cluster_on("etcd4", cli, lab, tmp_path, release_mirror)
    cli("up", check=True)
    proc = cli("add-node", "etcd4", "--address", HOSTS["etcd4"])
    assert proc.returncode == 5, proc.stderr
    assert "etcd4: /var/lib/etcd holds data, but etcd4 is not a member" in proc.stderr
    roles = {m["name"]: m["role"] for m in cli.status()["members"]}
    assert roles["etcd4"] == "not a member", roles
    forced = cli("add-node", "etcd4", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "moved the old data dir aside to /var/lib/etcd.etcd-deploy-" in forced.stderr
    _assert_healthy(cli, 4)
