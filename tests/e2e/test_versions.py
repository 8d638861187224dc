"""Today's etcd rules on real hosts and real 3.5.30 binaries: the corruption checks are on
and etcd runs them, a refused upgrade to 3.6 touches no host, and the v2-store check reads
the real etcdutl's verdict on a member that holds custom v2 data."""

from __future__ import annotations

import time

import httpx

from orchestrator.adapters.inventory_file import load_inventory
from orchestrator.core import v2store
from tests.e2e.conftest import Cli, unit_started_at
from tests.e2e.load import client_for, put_keys
from tests.lab.driver import HOSTS, Lab

THREE = ["etcd1", "etcd2", "etcd3"]
# v2 data needs the v2 API, and 3.5.30's etcdutl reads it from the newest .snap only: a
# low snapshot count puts it there after a few writes.
FLAGS = 'metrics = "host"\n\n[cluster.flags]\nenable-v2 = true\nsnapshot-count = 20\n'


def _fingerprint(lab: Lab, name: str) -> tuple[str, str]:
    """What an upgrade would change on a host: binaries, env, unit, and the start time."""
    files = lab.exec(
        name,
        "sha256sum /opt/bin/etcd /opt/bin/etcdctl /opt/bin/etcdutl /etc/etcd/etcd.env "
        "/etc/systemd/system/etcd.service; ls /opt/bin",
    ).stdout
    return files, unit_started_at(lab, name)


def _error_line(proc_stderr: str) -> str:
    errors = [line for line in proc_stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, proc_stderr
    assert "Traceback" not in proc_stderr
    return errors[0]


def _check(lab: Lab, cli: Cli, name: str) -> str | None:
    inv = load_inventory(cli.inventory)
    result = lab.exec(name, v2store.check_script(inv), check=False)
    return v2store.problem(name, result.returncode, result.stdout, "3.6.14")


def test_corruption_checks_refused_upgrades_and_the_v2_store(make_cli, lab: Lab) -> None:
    cli = make_cli(3, version="3.5.30", extra=FLAGS)
    up = cli("up")
    assert up.returncode == 0, up.stderr
    assert " WARN " not in up.stderr, up.stderr  # today's 3.5 is not warned about
    for name in THREE:
        env = lab.exec(name, "cat /etc/etcd/etcd.env").stdout
        assert "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK=true\n" in env
        assert "ETCD_EXPERIMENTAL_COMPACT_HASH_CHECK_ENABLED=true\n" in env
        journal = lab.exec(name, "journalctl -u etcd.service --no-pager -o cat").stdout
        # etcd's own account of its config at start (3.5: "starting an etcd server")
        started = [line for line in journal.splitlines() if "starting an etcd server" in line]
        assert started and '"initial-corrupt-check":true' in started[-1], journal[-2000:]
        assert '"compact-check-time-enabled":true' in started[-1]
        # metrics on plain HTTP: on the host's loopback, and (metrics = "host") its address
        local = lab.exec(
            name,
            "bash -c 'exec 3<>/dev/tcp/127.0.0.1/2381; "
            'printf "GET /metrics HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3\'',
        ).stdout
        assert "etcd_server_has_leader 1" in local, local[:500]
        health = httpx.get(f"http://{HOSTS[name]}:2381/health", timeout=5)
        assert health.status_code == 200 and health.json()["health"] == "true", health.text

    before = {name: _fingerprint(lab, name) for name in THREE}
    # A flag 3.6 no longer has: one line, before any connection.
    flag = cli("upgrade", "3.6.14", "--yes")
    assert flag.returncode == 2, flag.stderr
    line = _error_line(flag.stderr)
    assert "cluster.flags.enable-v2: --enable-v2 was removed in etcd 3.6" in line
    assert "nothing was changed" in line
    # The flag gone from a stale inventory (the hosts still run it): 3.5.30 is below the
    # minimum source patch for 3.6, refused from what the members report.
    text = cli.inventory.read_text()
    cli.inventory.write_text(text.replace("enable-v2 = true\n", ""))
    patch = cli("upgrade", "3.6.14", "--yes")
    assert patch.returncode == 5, patch.stderr
    line = _error_line(patch.stderr)
    assert "min-source-patch" in line and "`etcd-deploy upgrade 3.5.32`" in line
    assert {name: _fingerprint(lab, name) for name in THREE} == before
    cli.inventory.write_text(text)

    # The v2-store check against the real etcdutl: membership only, then custom v2 data.
    for name in THREE:
        assert _check(lab, cli, name) is None
    pki = cli.inventory.parent / ".etcd-deploy" / "lab" / "pki"
    endpoint = f"https://{HOSTS['etcd1']}:2379"
    with client_for(pki) as client:
        response = client.put(f"{endpoint}/v2/keys/legacy", data={"value": "from-v2"})
        assert response.status_code == 201, response.text
    put_keys(endpoint, pki, 50, prefix="/after-v2/")  # past snapshot-count: a new .snap
    deadline = time.monotonic() + 60
    while (problem := _check(lab, cli, "etcd1")) is None and time.monotonic() < deadline:
        put_keys(endpoint, pki, 25, prefix="/more/")
        time.sleep(1)
    assert problem is not None and "holds data other than membership" in problem, problem
    assert "snapshot-count = 1" in problem
    assert cli.status()["healthy"]
