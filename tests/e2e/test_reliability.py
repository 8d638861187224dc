"""The whole tool under load, faults and hostile conditions, on real hosts."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Cli, unit_started_at
from tests.e2e.load import Writer
from tests.lab.driver import HOSTS, Lab
from tests.self_signed import self_signed

THREE = ["etcd1", "etcd2", "etcd3"]


def _pki(cli: Cli) -> Path:
    return cli.inventory.parent / ".etcd-deploy" / "lab" / "pki"


def _endpoints(names: list[str]) -> list[str]:
    return [f"https://{HOSTS[n]}:2379" for n in names]


def _wait_healthy(cli: Cli, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not cli.status()["healthy"]:
        assert time.monotonic() < deadline, cli.status()["summary"]
        time.sleep(1)


def test_every_operation_under_a_writer_loses_nothing(make_cli, lab: Lab, load_table) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    members = list(THREE)

    def under_load(operation: str, action) -> None:  # type: ignore[no-untyped-def]
        writer = Writer(_endpoints(list(HOSTS)), _pki(cli), prefix=f"/{len(load_table.rows)}/")
        writer.start()
        try:
            time.sleep(0.5)
            action()
            time.sleep(0.5)
        finally:
            writer.stop()
        _wait_healthy(cli)
        report = writer.verify(_endpoints(members)[0])
        load_table.add(operation, report)
        assert report.lost == [] and report.acknowledged > 10, (operation, report)

    def config_change() -> None:
        cli.inventory.write_text(
            cli.inventory.read_text().replace(
                "[ssh]", "[cluster.flags]\nsnapshot-count = 20000\n\n[ssh]"
            )
        )
        assert cli("up").returncode == 0

    def kill_and_start() -> None:
        lab.kill("etcd2")
        time.sleep(2)
        lab.start("etcd2")

    def replace() -> None:
        lab.stop("etcd3")
        proc = cli("replace-node", "etcd3", "etcd4", "--address", HOSTS["etcd4"])
        assert proc.returncode == 0, proc.stderr
        members[members.index("etcd3")] = "etcd4"

    under_load("rolling config change (up)", config_change)
    under_load("certs renew (all)", lambda: cli("certs", "renew", check=True))
    under_load("defrag", lambda: cli("defrag", check=True))
    under_load("backup", lambda: cli("backup", check=True))
    under_load("restart (rolling)", lambda: cli("restart", check=True))
    under_load("host killed hard, started again", kill_and_start)
    under_load("replace-node (dead host)", replace)


def test_host_stopped_in_the_middle_of_up_then_rerun_converges(make_cli, lab: Lab) -> None:
    cli = make_cli(3)

    def stop_etcd3(line: str, _proc: object) -> None:
        if "[bootstrap]" in line and "starting" in line:
            lab.stop("etcd3")

    code, output = cli.run_reacting("up", react=stop_etcd3)
    assert code != 0 and "etcd3" in output.strip().splitlines()[-1], output
    lab.start("etcd3")
    rerun = cli("up")
    assert rerun.returncode == 0, rerun.stderr
    assert cli.status()["healthy"]


def test_ssh_cut_during_the_upload_fails_clearly_and_a_rerun_converges(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    # Inside etcd2: wait for the tarball upload to start, then kill every SSH session.
    killer = threading.Thread(
        target=lab.exec,
        args=(
            "etcd2",
            "for i in $(seq 1 200000); do pgrep -f 'ta[r] -x -z' >/dev/null && break; done; "
            "pkill -f 'sshd: roo[t]'; true",
        ),
    )
    killer.start()
    proc = cli("up")
    killer.join()
    assert proc.returncode == 4, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "etcd2" in last or "install" in last, proc.stderr
    rerun = cli("up")
    assert rerun.returncode == 0, rerun.stderr
    assert cli.status()["healthy"]


def test_a_bad_flag_rolls_that_member_back_and_shows_its_journal(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    started = {n: unit_started_at(lab, n) for n in THREE}
    cli.inventory.write_text(
        cli.inventory.read_text().replace(
            "[ssh]", '[cluster.flags]\nsnapshot-count = "lots"\n\n[ssh]'
        )
    )
    proc = cli("up")
    assert proc.returncode == 1, proc.stderr
    assert "last journal lines" in proc.stderr and "ETCD_SNAPSHOT_COUNT" in proc.stderr
    assert "previous unit and env were put back" in proc.stderr
    assert "untouched:" in proc.stderr
    assert cli.status()["healthy"]
    envs = [lab.exec(n, "cat /etc/etcd/etcd.env").stdout for n in THREE]
    assert not any("lots" in env for env in envs)
    assert sum(unit_started_at(lab, n) != started[n] for n in THREE) == 1


def test_a_member_cut_off_during_a_rolling_restart_stops_it_safely(make_cli, lab: Lab) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    cut: list[str] = []

    def cut_one(line: str, _proc: object) -> None:
        if not cut and "healthy and caught up" in line:
            done = re.search(r"\[restart (\w+)\]", line).group(1)  # type: ignore[union-attr]
            cut.append(next(n for n in THREE if n != done))
            lab.cut(cut[0])

    code, output = cli.run_reacting("restart", react=cut_one)
    try:
        assert cut and code in (1, 6), output
        assert "stopped at" in output and "untouched" in output
    finally:
        for name in THREE:
            lab.heal(name)
    _wait_healthy(cli)


def test_two_runs_at_once_one_wins_the_other_is_refused(make_cli) -> None:
    cli = make_cli(3)
    command = [sys.executable, "-m", "orchestrator", "up", "-i", str(cli.inventory)]
    procs = [
        subprocess.Popen(
            command, stderr=subprocess.PIPE, text=True, env=cli.env, stdin=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
    results = [(p.wait(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 5], "\n\n".join(f"exit {code}:\n{err}" for code, err in results)
    refused = next(err for code, err in results if code == 5)
    assert "locked by another etcd-deploy run" in refused
    assert cli.status()["healthy"]


def test_no_secret_reaches_the_logs(make_cli) -> None:
    """Every command that sends keys, at -v: up, certs renew, certs rotate-ca."""
    cli = make_cli(3)
    output = ""
    keys: dict[str, Path] = {}  # every key body each command left (renew replaces them)
    for command in (["up"], ["certs", "renew"], ["certs", "rotate-ca"]):
        proc = cli(*command, "-v")
        assert proc.returncode == 0, proc.stderr
        output += proc.stdout + proc.stderr
        keys |= {"".join(k.read_text().splitlines()[1:-1]): k for k in _pki(cli).rglob("*.key")}
    assert "$ " in output  # -v shows the remote commands
    assert "PRIVATE KEY" not in output
    for body, key in keys.items():
        for start in range(0, len(body) - 24, 24):
            assert body[start : start + 24] not in output, key


def test_etcd_refuses_clients_and_peers_with_certs_from_another_ca(make_cli, tmp_path) -> None:
    cli = make_cli(3)
    cli("up", check=True)
    pki = _pki(cli)
    ours = (pki / "etcd-deploy-client.crt", pki / "etcd-deploy-client.key")
    theirs = self_signed(tmp_path, "intruder")  # another cluster's own CA, as it were
    for port, path in ((2379, "/health"), (2380, "/members")):
        url = f"https://{HOSTS['etcd1']}:{port}{path}"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(*map(str, ours))
        assert httpx.get(url, verify=context, timeout=5).status_code == 200  # the control case
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(*map(str, theirs))
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, verify=context, timeout=5)


def test_systemd_rates_the_unit_exposure_at_most_3_5(make_cli, lab: Lab) -> None:
    cli = make_cli(1)
    cli("up", check=True)
    out = lab.exec("etcd1", "systemd-analyze security etcd.service | tail -n 1").stdout
    score = float(re.search(r"exposure level for etcd.service: ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    assert score <= 3.5, out
