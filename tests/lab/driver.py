"""The test lab: five Debian 12 hosts (systemd + sshd, no Python) under Docker Compose,
plus a bastion host (same image, never runs etcd) for the bastion topology
(tests/lab/control_ns.py).

Usable from the shell (`python -m tests.lab up 3`) and from pytest (`Lab().up(3)`).
Everything it touches is on this machine: the lab subnet below, reached through the
bridge Docker makes for it, and a guard route that keeps late packets for that subnet
from ever following the default route off the machine.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.test.yml"
IMAGE_DIR = Path(__file__).resolve().parent / "image"
PROJECT = "etcd-deploy-lab"
SUBNET = ipaddress.ip_network("172.29.50.0/24")
HOSTS = {f"etcd{i}": f"172.29.50.{10 + i}" for i in range(1, 6)}  # the etcd hosts only
ROOTFS_IMAGE = "etcd-deploy-lab-rootfs:bookworm"
IMAGE = "etcd-deploy-lab:bookworm"
CACHE_DIR = Path(os.environ.get("ETCD_DEPLOY_LAB_CACHE", "/var/cache/etcd-deploy-lab"))
APT_PACKAGES = ["docker.io", "docker-compose", "debootstrap", "iproute2", "openssh-client"]
DEBOOTSTRAP_INCLUDE = (
    "systemd,systemd-sysv,dbus,openssh-server,iproute2,ca-certificates,sudo,procps"
)

# Everything etcd-deploy may leave on a host, removed by `clean` so each test starts fresh.
HOST_SCRUB = r"""
systemctl stop 'etcd*' >/dev/null 2>&1
for m in $(findmnt -rn -o TARGET | grep '^/var/lib/etcd'); do umount "$m"; done
systemctl disable etcd.service 'etcd-backup.timer' >/dev/null 2>&1
rm -rf /etc/systemd/system/etcd* /etc/etcd /var/lib/etcd* /opt/bin /var/lib/etcd-deploy \
       /var/backups/etcd* /run/etcd-deploy* /var/tmp/etcd-deploy* /tmp/etcd-deploy*
userdel etcd >/dev/null 2>&1; groupdel etcd >/dev/null 2>&1
userdel -r deploy >/dev/null 2>&1; rm -f /etc/sudoers.d/etcd-deploy-lab
systemctl daemon-reload
systemctl reset-failed
ip route flush type blackhole >/dev/null 2>&1
true
"""


class LabError(RuntimeError):
    pass


def _run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = 600,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, input=input, env=env, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def _check_lab_address(address: str) -> None:
    """Refuse anything outside the lab subnet or loopback."""
    ip = ipaddress.ip_address(address)
    if ip not in SUBNET and not ip.is_loopback:
        raise LabError(f"refusing to target {address}: outside {SUBNET} and 127.0.0.0/8")


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str

    @property
    def container(self) -> str:
        return f"{PROJECT}-{self.name}"


# The jump host of the bastion topology: always up with the lab, never in HOSTS (tests
# iterate HOSTS as "the etcd hosts"), reachable like any host (exec, ssh, known_hosts).
BASTION = LabHost("bastion", "172.29.50.30")
ALL_HOSTS = {**HOSTS, BASTION.name: BASTION.address}


class Lab:
    """The lab on this machine. `run_dir` holds the per-lab client key and known_hosts."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.run_dir = Path(run_dir or os.environ.get("ETCD_DEPLOY_LAB_DIR", REPO / ".lab"))
        self.key = self.run_dir / "id_ed25519"
        self.known_hosts = self.run_dir / "known_hosts"
        self.ssh_config = self.run_dir / "ssh_config"

    # -- setup ---------------------------------------------------------------------------
    def hosts(self, count: int = 5) -> list[LabHost]:
        if not 1 <= count <= len(HOSTS):
            raise LabError(f"the lab has 1 to {len(HOSTS)} hosts, not {count}")
        return [LabHost(n, a) for n, a in list(HOSTS.items())[:count]]

    def host(self, name: str) -> LabHost:
        """An etcd host or the bastion, by name."""
        if name not in ALL_HOSTS:
            raise LabError(f"no lab host {name!r} (hosts: {', '.join(ALL_HOSTS)})")
        return LabHost(name, ALL_HOSTS[name])

    def ensure_tools(self) -> None:
        """Install docker.io, docker-compose and debootstrap if missing; start dockerd."""
        missing = [
            t for t in ("dockerd", "docker-compose", "debootstrap", "ssh") if not shutil.which(t)
        ]
        if missing:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            _run(["apt-get", "update", "-qq"], env=env)
            _run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], env=env)
        if _run(["docker", "info"], check=False, timeout=30).returncode != 0:
            log = open("/var/log/etcd-deploy-lab-dockerd.log", "ab")  # noqa: SIM115 - outlives us
            subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
            deadline = time.monotonic() + 60
            while _run(["docker", "info"], check=False, timeout=30).returncode != 0:
                if time.monotonic() > deadline:
                    raise LabError(
                        "dockerd did not answer within 60 s; see "
                        "/var/log/etcd-deploy-lab-dockerd.log"
                    )
                time.sleep(0.5)

    def ensure_image(self) -> None:
        """Build the host image; the base rootfs comes from debootstrap when no registry answers."""
        if _run(["docker", "image", "inspect", IMAGE], check=False).returncode == 0:
            return
        base = os.environ.get("ETCD_DEPLOY_LAB_BASE", ROOTFS_IMAGE)
        if (
            base == ROOTFS_IMAGE
            and _run(["docker", "image", "inspect", base], check=False).returncode
        ):
            self._import_rootfs()
        _run(["docker", "build", "-q", "--build-arg", f"BASE={base}", "-t", IMAGE, str(IMAGE_DIR)])

    def _import_rootfs(self) -> None:
        rootfs = CACHE_DIR / "rootfs"
        if not (rootfs / "usr/sbin/sshd").exists():
            shutil.rmtree(rootfs, ignore_errors=True)
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={DEBOOTSTRAP_INCLUDE}",
                    "bookworm",
                    str(rootfs),
                    _debian_mirror(),
                ],
                timeout=1200,
            )
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(
            ["docker", "import", "-", ROOTFS_IMAGE],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
        )
        tar.wait()
        if imp.returncode or tar.returncode:
            raise LabError(f"docker import of {rootfs} failed: {imp.stderr.strip()}")

    def ensure_client_key(self) -> bool:
        """Make the lab's client key unless it exists; True when it was made now."""
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        public = Path(str(self.key) + ".pub")
        if public.is_dir():  # Docker makes a folder for a bind source that is missing
            shutil.rmtree(public)
        if not (self.key.is_file() and public.is_file()):
            self.key.unlink(missing_ok=True)
            public.unlink(missing_ok=True)
            _run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "etcd-deploy-lab",
                    "-f",
                    str(self.key),
                ]
            )
            return True
        return False

    def guard_route(self) -> None:
        """Keep the lab subnet unreachable (not routed off the machine) when the bridge is gone."""
        _run(["ip", "route", "replace", "unreachable", str(SUBNET), "metric", "4000"])

    def _compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, LAB_AUTHORIZED_KEYS=str(self.key) + ".pub", LAB_IMAGE=IMAGE)
        return _run(
            ["docker-compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), *args], env=env, check=check
        )

    # -- lifecycle -------------------------------------------------------------------------
    def up(self, count: int = 5) -> list[LabHost]:
        """Bring up `count` etcd hosts and the bastion (idempotent: running hosts and the
        image are reused); return the etcd hosts."""
        hosts = self.hosts(count)
        machines = [*hosts, BASTION]
        self.ensure_tools()
        self.guard_route()
        self.ensure_image()
        if self.ensure_client_key():
            self._remove_hosts()  # running hosts hold the old key's file: make them again
        self._remove_foreign_hosts()
        self._compose("up", "-d", "--no-recreate", *[h.name for h in machines])
        for h in machines:
            self.start(h.name)  # a host stopped by a fault helper comes back too
        self.wait_ready(machines)
        self.write_known_hosts()
        return hosts

    def _remove_hosts(self) -> None:
        for name in ALL_HOSTS:
            _run(["docker", "rm", "-f", self.host(name).container], check=False)

    def _remove_foreign_hosts(self) -> None:
        """Remove lab hosts made by another checkout or with another image: they trust
        another client key (or run another image), so they cannot be reused."""
        key = str(self.key) + ".pub"
        image_id = _run(["docker", "image", "inspect", "-f", "{{.Id}}", IMAGE]).stdout.strip()
        template = (
            '{{.Image}} {{range .Mounts}}{{if eq .Destination "/etc/ssh/lab_authorized_keys"}}'
            "{{.Source}}{{end}}{{end}}"
        )
        for name in ALL_HOSTS:
            container = self.host(name).container
            proc = _run(["docker", "inspect", "-f", template, container], check=False)
            if proc.returncode != 0:
                continue
            if proc.stdout.split() != [image_id, key]:
                _run(["docker", "rm", "-f", container])

    def down(self) -> None:
        """Remove the control namespace, containers and the lab network; the guard route
        stays. The namespace goes first: its veth is a port of the lab's bridge."""
        from tests.lab.control_ns import ControlNamespace  # it imports this module

        ControlNamespace().down()
        if shutil.which("docker-compose") and _run(["docker", "info"], check=False).returncode == 0:
            self._compose("down", "--remove-orphans", "--timeout", "5")
        self.guard_route()

    def running(self) -> list[LabHost]:
        out = _run(
            ["docker", "ps", "--filter", "label=etcd-deploy-lab", "--format", "{{.Names}}"],
            check=False,
        ).stdout.split()
        return [self.host(n.removeprefix(f"{PROJECT}-")) for n in sorted(out)]

    def status(self) -> list[tuple[str, str, str]]:
        """(host, address, container state) for every lab host that exists."""
        out = _run(
            [
                "docker",
                "ps",
                "-a",
                "--filter",
                "label=etcd-deploy-lab",
                "--format",
                "{{.Names}} {{.State}}",
            ],
            check=False,
        ).stdout
        rows = []
        for line in sorted(out.splitlines()):
            name, state = line.split(maxsplit=1)
            host = self.host(name.removeprefix(f"{PROJECT}-"))
            rows.append((host.name, host.address, state))
        return rows

    def wait_ready(self, hosts: Iterable[LabHost], timeout: float = 90) -> None:
        """Wait until systemd finished booting and sshd has its host keys."""
        deadline = time.monotonic() + timeout
        for h in hosts:
            while True:
                state = self.exec(
                    h.name,
                    "systemctl is-system-running; "
                    "test -s /etc/ssh/ssh_host_ed25519_key.pub && "
                    "systemctl is-active ssh",
                    check=False,
                )
                lines = state.stdout.split()
                if len(lines) == 2 and lines[0] in ("running", "degraded") and lines[1] == "active":
                    break
                if time.monotonic() > deadline:
                    raise LabError(f"{h.name} not ready after {timeout:.0f} s: {state.stdout!r}")
                time.sleep(0.3)

    def write_known_hosts(self) -> Path:
        """Record each running host's real host keys, read from the host itself (no TOFU scan)."""
        lines = []
        for h in self.running():
            keys = self.exec(h.name, "cat /etc/ssh/ssh_host_*_key.pub").stdout.splitlines()
            lines += [f"{h.address} {' '.join(k.split()[:2])}" for k in keys if k.strip()]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.known_hosts.write_text("\n".join(lines) + "\n")
        return self.known_hosts

    def clean(self, hosts: Iterable[LabHost] | None = None) -> None:
        """Bring hosts back to bare: running, unfrozen, connected, no etcd-deploy footprint.
        The bastion is always included: a test may have stopped, frozen or cut it."""
        targets = list(hosts) if hosts is not None else self.hosts()
        if BASTION not in targets:
            targets.append(BASTION)
        existing = {name for name, _, _ in self.status()}
        for h in targets:
            if h.name not in existing:
                continue
            self.thaw(h.name, check=False)
            self.start(h.name)
        self.wait_ready([h for h in targets if h.name in existing])
        for h in targets:
            if h.name in existing:
                self.exec(h.name, HOST_SCRUB, check=False)

    # -- access --------------------------------------------------------------------------
    def exec(
        self, name: str, script: str, *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell script in the host through docker exec (the lab's back door, not SSH)."""
        return _run(["docker", "exec", self.host(name).container, "sh", "-c", script], check=check)

    def ssh_command(self, name: str, *command: str) -> list[str]:
        """The ssh command line that reaches a host with strict host-key checking."""
        host = self.host(name)
        _check_lab_address(host.address)
        return [
            "ssh",
            "-i",
            str(self.key),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "ConnectTimeout=5",
            f"root@{host.address}",
            *command,
        ]

    def jump_ssh_command(self, name: str, *command: str, via: str = BASTION.name) -> list[str]:
        """The ssh command line that reaches a host through a jump host (`ssh -J`), strict
        host keys on both hops. Options go in an ssh_config file (`-F`), because ssh passes
        `-F` on to the jump hop but applies `-i`/`-o` to the last hop only."""
        host, jump = self.host(name), self.host(via)
        _check_lab_address(host.address)
        _check_lab_address(jump.address)
        return [
            "ssh",
            "-F",
            str(self.write_ssh_config()),
            "-J",
            f"root@{jump.address}",
            f"root@{host.address}",
            *command,
        ]

    def write_ssh_config(self) -> Path:
        """An ssh_config with the lab's key and known_hosts for every host (and every hop)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ssh_config.write_text(
            "# The lab's client settings (written by tests/lab/driver.py).\n"
            "Host *\n"
            f"  IdentityFile {self.key}\n"
            "  IdentitiesOnly yes\n"
            "  BatchMode yes\n"
            "  StrictHostKeyChecking yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            "  ConnectTimeout 5\n"
        )
        return self.ssh_config

    def ssh(self, name: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(self.ssh_command(name, *command), check=check, timeout=120)

    def inventory(
        self,
        path: Path,
        count: int = 3,
        *,
        version: str = "3.5.30",
        release_url: str = "",
        cluster: str = "lab",
        extra: str = "",
        jump_host: str | None = None,
        etcd_api: str | None = None,
    ) -> Path:
        """Write a ready inventory for the first `count` hosts (known_hosts refreshed first).

        `jump_host`: the host every SSH connection goes through, written to [ssh]: a lab
        host's name (`"bastion"` gives `root@172.29.50.30`) or `[user@]address` as is.
        `etcd_api`: written as [ssh] etcd_api when given (the CLI checks its value).
        """
        self.write_known_hosts()
        release = f'release_url = "{release_url}"\n' if release_url else ""
        jump = f'jump_host = "{self._jump_spec(jump_host)}"\n' if jump_host else ""
        api = f'etcd_api = "{etcd_api}"\n' if etcd_api is not None else ""
        text = (
            "# Inventory for the etcd-deploy test lab "
            "(written by `python -m tests.lab inventory`).\n"
            f'[cluster]\nname = "{cluster}"\netcd_version = "{version}"\n{release}{extra}\n'
            f'[ssh]\nuser = "root"\nidentity_file = "{self.key}"\n'
            f'known_hosts = "{self.known_hosts}"\n{jump}{api}'
        )
        for h in self.hosts(count):
            text += f'\n[[hosts]]\nname = "{h.name}"\naddress = "{h.address}"\n'
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def _jump_spec(self, jump_host: str) -> str:
        """`root@ADDRESS` for a lab host's name, else the `[user@]address` given (checked)."""
        if jump_host in ALL_HOSTS:
            jump_host = f"root@{ALL_HOSTS[jump_host]}"
        _check_lab_address(jump_host.rpartition("@")[2])
        return jump_host

    # -- faults ----------------------------------------------------------------------------
    def stop(self, name: str) -> None:
        """Power a host off (systemd shuts down with it)."""
        _run(["docker", "stop", "--time", "10", self.host(name).container])

    def start(self, name: str) -> None:
        """Power a host on; it keeps its disk and host keys."""
        host = self.host(name)
        state = _run(
            ["docker", "inspect", "-f", "{{.State.Status}}", host.container]
        ).stdout.strip()
        if state in ("exited", "created"):
            _run(["docker", "start", host.container])
            self.wait_ready([host])

    def kill(self, name: str) -> None:
        """Cut a host's power: no clean shutdown."""
        _run(["docker", "kill", self.host(name).container])

    def freeze(self, name: str) -> None:
        _run(["docker", "pause", self.host(name).container])

    def thaw(self, name: str, *, check: bool = True) -> None:
        host = self.host(name)
        paused = _run(
            ["docker", "inspect", "-f", "{{.State.Paused}}", host.container], check=check
        ).stdout.strip()
        if paused == "true":
            _run(["docker", "unpause", host.container])

    def cut(self, name: str) -> None:
        """Cut a host off from the etcd hosts (the control machine still reaches it).
        Cutting the bastion leaves it reachable from the control side, but not the etcd hosts.
        """
        running = {h.name for h in self.running()}
        own = self.host(name).address
        for other, address in HOSTS.items():
            if other == name:
                continue
            _check_lab_address(address)
            self.exec(name, f"ip route replace blackhole {address}/32")
            if other in running:
                self.exec(other, f"ip route replace blackhole {own}/32")

    def heal(self, name: str) -> None:
        running = {h.name for h in self.running()}
        own = self.host(name).address
        for other, address in HOSTS.items():
            if other == name:
                continue
            self.exec(name, f"ip route del blackhole {address}/32", check=False)
            if other in running:
                self.exec(other, f"ip route del blackhole {own}/32", check=False)


def _debian_mirror() -> str:
    """The machine's own Debian mirror (LAB.md): the URIs: line of debian.sources."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"
