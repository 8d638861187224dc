"""upgrade, defrag and restart through the rolling engine, on real hosts and real binaries."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Cli, unit_started_at
from tests.e2e.load import DownSampler, Writer, client_for, put_keys
from tests.lab.driver import HOSTS, Lab
from tests.lab.mirror import add_broken_version, default_mirror_dir

THREE = ["etcd1", "etcd2", "etcd3"]
ENDPOINTS = [f"https://{HOSTS[n]}:2379" for n in THREE]


def _pki(cli: Cli) -> Path:
    return cli.inventory.parent / ".etcd-deploy" / "lab" / "pki"


def _leader(cli: Cli) -> str:
    return next(m["name"] for m in cli.status()["members"] if m["role"] == "leader")


def _order(stderr: str, phase: str) -> list[str]:
    """Hosts in the order the engine acted on them (from `[phase host] <describe>` lines)."""
    names = []
    for line in stderr.splitlines():
        if f"[{phase} " in line and "healthy and caught up" in line:
            names.append(line.split(f"[{phase} ", 1)[1].split("]", 1)[0])
    return names


def _delete_and_compact(client: httpx.Client, key: bytes, range_end: bytes) -> None:
    """Delete [key, range_end) and compact physically: the DB file keeps its size, its
    pages go free (what defrag gives back)."""
    rev = client.post(
        f"{ENDPOINTS[0]}/v3/kv/deleterange",
        json={
            "key": base64.b64encode(key).decode(),
            "range_end": base64.b64encode(range_end).decode(),
        },
    ).json()["header"]["revision"]
    client.post(f"{ENDPOINTS[0]}/v3/kv/compaction", json={"revision": rev, "physical": True})


def _wait_compacted_everywhere(client: httpx.Client, timeout: float = 30) -> None:
    """Until every member has applied the compaction (followers apply it a moment after the
    leader): free space inside each DB. How much differs per member (9 to 20% seen here: the
    fill stops at the leader's quota), so the test's defrag threshold is 1%."""
    deadline = time.monotonic() + timeout
    while True:
        free = []
        for endpoint in ENDPOINTS:
            status = client.post(f"{endpoint}/v3/maintenance/status", json={}).json()
            size, in_use = int(status["dbSize"]), int(status["dbSizeInUse"])
            free.append((size - in_use) / size)
        if min(free) >= 0.02:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"compaction not applied everywhere: free {free}")
        time.sleep(0.1)


@pytest.mark.parametrize(("source", "target"), [("3.5.16", "3.5.30"), ("3.4.23", "3.5.30")])
def test_upgrade_to_todays_3_5_under_load(make_cli, load_table, source: str, target: str) -> None:
    """Real Debian builds of today's 3.5 (trixie's 3.5.16, sid's 3.5.30): a patch upgrade and
    a minor one, a writer running through each, never two members down."""
    cli = make_cli(3, version=source)
    cli("up", check=True)
    leader = _leader(cli)
    writer = Writer(ENDPOINTS, _pki(cli)).start()
    try:
        with DownSampler(ENDPOINTS, _pki(cli)) as sampler:
            proc = cli("upgrade", target, "--yes")
    finally:
        writer.stop()
    assert proc.returncode == 0, proc.stderr
    assert sampler.most_down <= 1, sampler
    order = _order(proc.stderr, "upgrade")
    assert sorted(order) == THREE and order[-1] == leader, order
    report = writer.verify(ENDPOINTS[0])
    load_table.add(f"upgrade {source} -> {target}", report)
    assert report.acknowledged > 100 and report.lost == []
    assert {m["version"] for m in cli.status()["members"]} == {target}


def test_upgrade_3_4_to_3_5_0_to_3_5_1_under_load(make_cli, load_table) -> None:
    cli = make_cli(3, version="3.4.23")
    cli("up", check=True)
    refused = cli("upgrade", "3.6.0", "--yes")
    assert refused.returncode == 5 and "minor-one-at-a-time" in refused.stderr
    writer = Writer(ENDPOINTS, _pki(cli)).start()
    try:
        for version in ("3.5.0", "3.5.1"):
            leader = _leader(cli)
            with DownSampler(ENDPOINTS, _pki(cli)) as sampler:
                proc = cli("upgrade", version, "--yes", "--allow-known-bad")
            assert proc.returncode == 0, proc.stderr
            assert sampler.most_down <= 1, sampler
            # members restarting refuse connections for a moment: never mistaken for a
            # firewall (the ports are open here), so etcd's API stays on the direct path
            assert "goes through SSH" not in proc.stderr, proc.stderr
            order = _order(proc.stderr, "upgrade")
            assert sorted(order) == THREE and order[-1] == leader, order
            assert "backup taken first" in proc.stderr
    finally:
        writer.stop()
    report = writer.verify(ENDPOINTS[0])
    load_table.add("upgrade 3.4.23 -> 3.5.0 -> 3.5.1", report)
    assert report.acknowledged > 100 and report.lost == []
    assert {m["version"] for m in cli.status()["members"]} == {"3.5.1"}
    assert 'etcd_version = "3.5.1"' in cli.inventory.read_text()
    assert cli("plan").returncode == 0
    downgrade = cli("upgrade", "3.5.0", "--yes", "--allow-known-bad")
    assert downgrade.returncode == 5 and "no-downgrade" in downgrade.stderr


def test_upgrade_to_a_binary_that_cannot_start_rolls_back(make_cli, lab: Lab) -> None:
    add_broken_version(default_mirror_dir(), "3.5.30", "3.5.99")
    cli = make_cli(3)
    cli("up", check=True)
    started = {n: unit_started_at(lab, n) for n in THREE}
    proc = cli("upgrade", "3.5.99", "--yes")
    assert proc.returncode == 1, proc.stderr
    assert "previous binaries and env are back" in proc.stderr
    assert "last journal lines" in proc.stderr and "untouched:" in proc.stderr
    status = cli.status()
    assert status["healthy"] and {m["version"] for m in status["members"]} == {"3.5.30"}
    touched = [n for n in THREE if unit_started_at(lab, n) != started[n]]
    assert len(touched) == 1  # the engine stopped at the first member
    for name in THREE:
        assert "3.5.30" in lab.exec(name, "/opt/bin/etcd --version").stdout
    assert 'etcd_version = "3.5.30"' in cli.inventory.read_text()


def test_defrag_shrinks_the_db_leader_last(make_cli) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    put_keys(ENDPOINTS[0], _pki(cli), 3000, prefix="/big/")
    with client_for(_pki(cli)) as client:
        value = base64.b64encode(b"x" * 4096).decode()
        for i in range(1500):
            key = base64.b64encode(f"/blob/{i:05d}".encode()).decode()
            client.post(f"{ENDPOINTS[0]}/v3/kv/put", json={"key": key, "value": value})
        _delete_and_compact(client, b"/", b"0")
    before = {m["name"]: m["db_size"] for m in cli.status()["members"]}
    leader = _leader(cli)
    proc = cli("defrag", "--threshold", "10")
    assert proc.returncode == 0, proc.stderr
    after = {m["name"]: m["db_size"] for m in cli.status()["members"]}
    assert all(after[n] < before[n] / 2 for n in THREE), (before, after)
    order = _order(proc.stderr, "defrag")
    assert sorted(order) == THREE and order[-1] == leader
    again = cli("defrag", "--threshold", "50")
    assert again.stderr.count("skipped:") == 3


def test_defrag_clears_a_nospace_alarm(make_cli) -> None:
    """A DB past its quota raises NOSPACE (writes refused, every /health false): defrag must
    get past its own health gates, give the space back and disarm the alarm."""
    cli = make_cli(3)
    cli.inventory.write_text(
        cli.inventory.read_text().replace(
            "[ssh]", "[cluster.flags]\nquota-backend-bytes = 3000000\n\n[ssh]"
        )
    )
    cli("up", check=True)
    value = base64.b64encode(b"x" * 100_000).decode()
    with client_for(_pki(cli), timeout=30) as client:
        for i in range(200):  # 20 MB: far past the 3 MB quota
            key = base64.b64encode(f"/fill/{i:05d}".encode()).decode()
            put = client.post(f"{ENDPOINTS[0]}/v3/kv/put", json={"key": key, "value": value})
            if "space exceeded" in put.text:
                break
        else:
            raise AssertionError("the quota was never reached")
        status = cli.status()
        assert not status["healthy"] and "NOSPACE" in status["summary"], status
        _delete_and_compact(client, b"/fill/", b"/fill0")
        _wait_compacted_everywhere(client)
        proc = cli("defrag", "--threshold", "1")
        assert proc.returncode == 0, proc.stderr
        assert sorted(_order(proc.stderr, "defrag")) == THREE, proc.stderr
        assert "NOSPACE alarm of member" in proc.stderr
        key = base64.b64encode(b"/after-defrag").decode()
        put = client.post(f"{ENDPOINTS[0]}/v3/kv/put", json={"key": key, "value": value})
        assert put.status_code == 200 and "error" not in put.json(), put.text
    assert cli.status()["healthy"]


def test_rolling_restart_one_at_a_time_leader_last(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    leader = _leader(cli)
    started = {n: unit_started_at(lab, n) for n in THREE}
    dry = cli("restart", "--dry-run")
    assert dry.returncode == 10, dry.stderr  # the plan changes something
    assert dry.stdout.splitlines()[-1].startswith(f"[restart {leader}] restart etcd (leader: ")
    with DownSampler(ENDPOINTS, _pki(cli)) as sampler:
        proc = cli("restart")
    assert proc.returncode == 0, proc.stderr
    assert sampler.most_down <= 1
    assert all(unit_started_at(lab, n) != started[n] for n in THREE)
    assert _order(proc.stderr, "restart")[-1] == leader
    assert cli.status()["healthy"]
