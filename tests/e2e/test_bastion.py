"""The bastion topology is real: from the control namespace only the bastion's SSH port is
open, blocked connects fail at once, and SSH through the bastion works with strict host keys.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.lab.control_ns import ControlNamespace
from tests.lab.driver import BASTION, HOSTS, Lab

FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read())"


def _connect(control_ns: ControlNamespace, address: str, port: int) -> tuple[str, float]:
    started = time.monotonic()
    result = control_ns.tcp_connect(address, port, timeout=5)
    return result, time.monotonic() - started


def test_control_namespace_reaches_only_the_bastions_ssh_port(
    control_ns: ControlNamespace, lab: Lab
) -> None:
    """Rejected, not dropped: a blocked connect fails with EHOSTUNREACH well before its
    5 s timeout (the check's own cost is starting a Python in the namespace)."""
    assert _connect(control_ns, BASTION.address, 22)[0] == "ok"
    for address, port in [(HOSTS["etcd1"], 22), (HOSTS["etcd1"], 2379), (BASTION.address, 2379)]:
        result, took = _connect(control_ns, address, port)
        assert (result, took < 2.5) == ("EHOSTUNREACH", True), (address, port, result, took)
    assert control_ns.run("ip", "route", "show", "default").stdout == ""
    # The root namespace still reaches every host, for the tests' own checks.
    assert lab.ssh("etcd1", "hostname").stdout.strip() == "etcd1"
    assert lab.exec("etcd1", "hostname").stdout.strip() == "etcd1"


def test_ssh_through_the_bastion_with_strict_host_keys(
    control_ns: ControlNamespace, lab: Lab
) -> None:
    """`ssh -J` from the namespace reaches etcd1, which sees the bastion as the client;
    straight ssh is refused."""
    remote = "hostname; echo $SSH_CONNECTION"
    jump = [*control_ns.prefix(), *lab.jump_ssh_command("etcd1", remote)]
    proc = subprocess.run(jump, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    name, client, *_ = proc.stdout.split()
    assert (name, client) == ("etcd1", BASTION.address)

    direct = [*control_ns.prefix(), *lab.ssh_command("etcd1", "true")]
    proc = subprocess.run(direct, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 255 and "No route to host" in proc.stderr, proc.stderr


def test_the_bastion_hop_checks_its_host_key_too(
    control_ns: ControlNamespace, lab: Lab, tmp_path: Path
) -> None:
    """The lab's ssh_config reaches the jump hop: without the bastion's key it is refused."""
    known = tmp_path / "known_hosts"
    lines = lab.known_hosts.read_text().splitlines()
    known.write_text("".join(f"{ln}\n" for ln in lines if not ln.startswith(BASTION.address)))
    config = tmp_path / "ssh_config"
    config.write_text(lab.write_ssh_config().read_text().replace(str(lab.known_hosts), str(known)))
    command = lab.jump_ssh_command("etcd1", "true")
    command[command.index("-F") + 1] = str(config)
    proc = subprocess.run(
        [*control_ns.prefix(), *command], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 255 and "Host key verification failed" in proc.stderr, proc.stderr


def test_release_mirror_is_served_inside_the_namespace(
    control_ns: ControlNamespace, control_mirror: str
) -> None:
    """The CLI in the namespace downloads from the namespace's own loopback."""
    url = f"{control_mirror}/v3.5.1/SHA256SUMS"
    sums = control_ns.run(sys.executable, "-c", FETCH, url).stdout
    assert "etcd-v3.5.1-linux-amd64.tar.gz" in sums
