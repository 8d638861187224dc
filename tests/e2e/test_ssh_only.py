"""Every command with only SSH open: the CLI runs in the control namespace, which reaches
nothing but the bastion's SSH port (tests/lab/control_ns.py); etcd's API goes through the
run's SSH connections (`ssh.etcd_api`)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import Cli, unit_started_at
from tests.e2e.load import put_keys, read_prefix
from tests.lab.control_ns import ControlNamespace
from tests.lab.driver import HOSTS, Lab

THREE = ["etcd1", "etcd2", "etcd3"]
ENDPOINT = f"https://{HOSTS['etcd1']}:2379"  # from the root namespace, for the test's checks


def _pki(cli: Cli) -> Path:
    return cli.inventory.parent / ".etcd-deploy" / "lab" / "pki"


def _ok(cli: Cli, *args: str) -> str:
    proc = cli(*args)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def _members(cli: Cli) -> dict[str, dict]:
    status = cli.status()
    assert status["healthy"], status
    return {m["name"]: m for m in status["members"]}


def _set_api(cli: Cli, setting: str) -> None:
    lines = [ln for ln in cli.inventory.read_text().splitlines() if not ln.startswith("etcd_api")]
    text = "\n".join(lines) + "\n"
    cli.inventory.write_text(text.replace("[ssh]\n", f'[ssh]\netcd_api = "{setting}"\n'))


def test_every_command_through_the_bastion(make_bastion_cli, lab: Lab) -> None:
    """up (learner), status, plan, etcdctl, add-node, remove-node, restart, upgrade, certs
    renew, defrag, backup, restore and destroy, each with only the bastion's SSH port open."""
    cli = make_bastion_cli(3, version="3.5.0")
    _ok(cli, "up")
    assert {m["role"] for m in _members(cli).values()} == {"leader", "follower"}
    assert cli("plan").returncode == 0  # nothing to change

    # etcdctl on the leader, then on a chosen member; output and exit code pass through
    put = cli("etcdctl", "--", "put", "/ssh-only/a", "1")
    assert (put.returncode, put.stdout) == (0, "OK\n"), put.stderr
    leader = next(n for n, m in _members(cli).items() if m["role"] == "leader")
    assert f"on {leader} (leader" in put.stderr and "https://127.0.0.1:2379" in put.stderr
    got = cli("etcdctl", "--host", "etcd2", "--", "get", "/ssh-only/a", "--print-value-only")
    assert (got.returncode, got.stdout) == (0, "1\n") and "on etcd2 (chosen" in got.stderr
    wrong = cli("etcdctl", "--", "no-such-command")
    assert wrong.returncode == 1 and 'unknown command "no-such-command"' in wrong.stderr

    _ok(cli, "add-node", "etcd4", "--address", HOSTS["etcd4"])
    assert set(_members(cli)) == {*THREE, "etcd4"}
    _ok(cli, "remove-node", "etcd4")
    assert set(_members(cli)) == set(THREE)

    started = {n: unit_started_at(lab, n) for n in THREE}
    _ok(cli, "restart")
    assert all(unit_started_at(lab, n) != started[n] for n in THREE)

    _ok(cli, "upgrade", "3.5.1", "--yes", "--allow-known-bad")
    assert {m["version"] for m in _members(cli).values()} == {"3.5.1"}

    before = lab.exec("etcd1", "sha256sum /etc/etcd/pki/server.crt").stdout
    _ok(cli, "certs", "renew")
    assert lab.exec("etcd1", "sha256sum /etc/etcd/pki/server.crt").stdout != before
    check = cli("certs", "check", "--json")  # reads what each member serves, through SSH
    assert check.returncode == 0, check.stderr
    served = [c for c in json.loads(check.stdout)["certificates"] if "served" in c["source"]]
    assert len(served) == 6 and not any(c["problem"] for c in served), served

    _ok(cli, "defrag", "--threshold", "0")

    put_keys(ENDPOINT, _pki(cli), 500)
    backup = json.loads(_ok(cli, "backup", "--json"))
    assert backup["keys"] >= 500 and Path(backup["file"]).stat().st_size > 0
    _ok(cli, "destroy", "--yes")
    assert lab.exec("etcd1", "test -e /etc/etcd", check=False).returncode != 0
    _ok(cli, "restore", backup["file"], "--yes")
    assert len(read_prefix(ENDPOINT, _pki(cli), "/keys/")) == 500
    _ok(cli, "destroy", "--yes")


def test_parallel_bootstrap_and_direct_mode_behind_the_bastion(make_bastion_cli, lab: Lab) -> None:
    """ "direct" behind the bastion stops `up` before any change, in one line naming the port
    and the setting; `status` says "unreachable from this machine", not "down". Then the
    same hosts through SSH, bootstrapped in parallel."""
    cli = make_bastion_cli(3, api="direct")
    refused = cli("up", "--parallel-bootstrap")
    errors = [ln for ln in refused.stderr.splitlines() if "ERROR" in ln]
    assert refused.returncode == 3 and len(errors) == 1, refused.stderr
    assert "port 2379" in errors[0] and 'ssh.etcd_api = "ssh"' in errors[0]
    for name in THREE:  # nothing was installed anywhere
        assert lab.exec(name, "test -e /etc/etcd || test -e /opt/bin/etcd", check=False).returncode

    _set_api(cli, "ssh")
    _ok(cli, "up", "--parallel-bootstrap")
    assert len(_members(cli)) == 3

    _set_api(cli, "direct")
    status = cli("status", "--json")
    assert status.returncode == 6
    rows = json.loads(status.stdout)["members"]
    assert {(r["role"], r["health"]) for r in rows} == {
        ("unknown", "unreachable from this machine")
    }
    assert "port 2379" in json.loads(status.stdout)["summary"]
    _set_api(cli, "ssh")
    _ok(cli, "destroy", "--yes")


def test_auto_falls_back_to_ssh_and_status_tells_down_from_unreachable(
    make_bastion_cli, control_ns: ControlNamespace, lab: Lab
) -> None:
    """No jump host, the hosts' SSH open, etcd's ports closed: "auto" tries the port, says
    once that it moves to SSH, and works. A member whose etcd is stopped is "down" with the
    host's own answer; the others stay healthy."""
    cli = make_bastion_cli(3)
    text = cli.inventory.read_text()
    cli.inventory.write_text("".join(ln for ln in text.splitlines(True) if "jump_host" not in ln))
    with control_ns.ssh_open_to(HOSTS[n] for n in THREE):
        up = cli("up")
        assert up.returncode == 0, up.stderr
        notices = [ln for ln in up.stderr.splitlines() if "etcd's API goes through SSH" in ln]
        assert len(notices) == 1 and "No route to host" in notices[0], up.stderr
        assert len(_members(cli)) == 3

        lab.exec("etcd3", "systemctl stop etcd")
        status = cli("status", "--json")
        assert status.returncode == 6
        rows = {r["name"]: r for r in json.loads(status.stdout)["members"]}
        assert rows["etcd3"]["role"] == "down"
        assert "nothing accepts connections" in rows["etcd3"]["health"], rows["etcd3"]
        assert "through SSH" in rows["etcd3"]["health"]
        assert {rows[n]["health"] for n in ("etcd1", "etcd2")} == {"healthy"}
        lab.exec("etcd3", "systemctl start etcd")
        _ok(cli, "destroy", "--yes")
