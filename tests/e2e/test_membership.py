"""add-node, remove-node, replace-node on real hosts, with a writer that must lose nothing."""

from __future__ import annotations

import signal

from tests.e2e.conftest import Cli
from tests.e2e.load import Writer
from tests.lab.driver import HOSTS, Lab


def _members(cli: Cli) -> dict[str, str]:
    """name -> role, for members of the cluster."""
    return {m["name"]: m["role"] for m in cli.status()["members"] if m["role"] != "not a member"}


def _hosts_in_inventory(cli: Cli) -> list[str]:
    return [
        line.split('"')[1]
        for line in cli.inventory.read_text().splitlines()
        if line.startswith("name = ") and "etcd" in line
    ]


def test_grow_1_3_5_then_shrink_to_3_removing_the_leader_under_load(make_cli, load_table) -> None:
    cli = make_cli(1)
    cli.inventory.write_text(
        cli.inventory.read_text()
        .replace("[[hosts]]", "# our hosts, grown with add-node\n\n[[hosts]]")
        .replace("[ssh]", "[ssh]  # how we reach them")
    )
    cli("up", check=True)
    pki = cli.inventory.parent / ".etcd-deploy" / "lab" / "pki"
    writer = Writer([f"https://{a}:2379" for a in HOSTS.values()], pki).start()
    try:
        for name in ("etcd2", "etcd3", "etcd4", "etcd5"):
            proc = cli("add-node", name, "--address", HOSTS[name])
            assert proc.returncode == 0, proc.stderr
            assert f"[join {name}] promoted to voting member" in proc.stderr
        assert sorted(_members(cli)) == list(HOSTS)
        assert cli.status()["healthy"]
        for _ in range(2):
            leader = next(n for n, role in _members(cli).items() if role == "leader")
            proc = cli("remove-node", leader)
            assert proc.returncode == 0, proc.stderr
            assert "leadership handed to" in proc.stderr
            assert leader not in _members(cli)
    finally:
        writer.stop()
    status = cli.status()
    assert status["healthy"] and len(_members(cli)) == 3
    assert len(_hosts_in_inventory(cli)) == 3
    text = cli.inventory.read_text()
    assert "# our hosts, grown with add-node" in text and "[ssh]  # how we reach them" in text
    report = writer.verify(f"https://{HOSTS[next(iter(_members(cli)))]}:2379")
    load_table.add("add-node x4, remove-node x2", report)
    assert report.acknowledged > 50 and report.lost == [], report
    print(f"\nadd/remove under load: {report}")


def test_remove_a_stopped_host_then_two_to_one_needs_force(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    lab.stop("etcd3")
    proc = cli("remove-node", "etcd3")
    assert proc.returncode == 0, proc.stderr
    assert "files were left in place" in proc.stderr
    assert sorted(_members(cli)) == ["etcd1", "etcd2"] and cli.status()["healthy"]
    assert _hosts_in_inventory(cli) == ["etcd1", "etcd2"]
    refused = cli("remove-node", "etcd2")
    assert refused.returncode == 5 and "two-to-one" in refused.stderr
    assert sorted(_members(cli)) == ["etcd1", "etcd2"]


def test_unsafe_removal_is_refused_and_changes_nothing(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    before = cli.inventory.read_text()
    lab.stop("etcd3")
    proc = cli("remove-node", "etcd1")
    assert proc.returncode == 5, proc.stderr
    assert "quorum-after-remove" in proc.stderr and "healthy=2" in proc.stderr
    assert cli.inventory.read_text() == before
    lab.start("etcd3")
    assert cli("up").returncode == 0  # etcd3 is started again by up if needed
    assert sorted(_members(cli)) == ["etcd1", "etcd2", "etcd3"]
    assert lab.exec("etcd1", "systemctl is-active etcd").stdout.strip() == "active"


def test_replace_a_stopped_host(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    lab.stop("etcd3")
    proc = cli("replace-node", "etcd3", "etcd4", "--address", HOSTS["etcd4"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.index("[remove etcd3]") < proc.stderr.index("[join etcd4]")
    assert sorted(_members(cli)) == ["etcd1", "etcd2", "etcd4"]
    assert cli.status()["healthy"]
    assert _hosts_in_inventory(cli) == ["etcd1", "etcd2", "etcd4"]


def test_add_node_killed_after_member_add_then_rerun_converges(make_cli) -> None:
    cli = make_cli(1)
    cli("up", check=True)
    code = cli.killed_at(
        "[join etcd2] added as learner", "add-node", "etcd2", "--address", HOSTS["etcd2"]
    )
    assert code == -signal.SIGKILL
    assert "etcd2" in _hosts_in_inventory(cli)  # persisted before the cluster changed
    rerun = cli("add-node", "etcd2")
    assert rerun.returncode == 0, rerun.stderr
    assert "completing it" in rerun.stderr
    assert sorted(_members(cli)) == ["etcd1", "etcd2"] and cli.status()["healthy"]
