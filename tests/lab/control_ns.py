"""The control network namespace: where the CLI runs in the bastion topology.

Real operators reach etcd hosts through a bastion with only SSH open. Here the control side
runs in a network namespace (`etcdlab-ctl`) with one veth port on the lab's bridge and the
address 172.29.50.100. Its own `iptables` OUTPUT chain lets out only loopback, established
traffic and TCP to the bastion's port 22; everything else is rejected with
`icmp-admin-prohibited`, so a blocked connect fails at once with EHOSTUNREACH ("No route to
host", as behind firewalld) instead of timing out. IPv6 is rejected the same way (the veth
has a link-local address, and so do the hosts). The namespace has no default route: nothing
run in it can ever leave the machine. The root namespace keeps reaching every host (the
lab's `exec`/`ssh` for the tests' own checks).

Docker's rules in the root namespace do not get in the way (checked with Docker 20.10 and
br_netfilter on): bridged frames between two ports of `etcdlab0` pass FORWARD through its
inter-container rule (`-i etcdlab0 -o etcdlab0 -j ACCEPT`), and the internal network's
DOCKER-ISOLATION-STAGE-1 drops only traffic from or to outside the lab subnet, which the
namespace's address is not. So no rule is added there.

Shell: `python -m tests.lab control up | down | exec -- CMD...`.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterable, Iterator

from tests.lab.driver import BASTION, SUBNET, LabError, _check_lab_address, _run

NAME = "etcdlab-ctl"
BRIDGE = "etcdlab0"  # com.docker.network.bridge.name in docker-compose.test.yml
ADDRESS = "172.29.50.100"  # outside the addresses the compose file gives hosts
OUTER = "etcdlab-ctl"  # the veth end on the bridge, in the root namespace
INNER = "eth0"  # the veth end in the namespace

_IPV4_RULES = f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -o lo -j ACCEPT
-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A OUTPUT -d {BASTION.address}/32 -p tcp -m tcp --dport 22 -j ACCEPT
-A OUTPUT -j REJECT --reject-with icmp-admin-prohibited
COMMIT
"""

_IPV6_RULES = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -o lo -j ACCEPT
-A OUTPUT -j REJECT --reject-with icmp6-adm-prohibited
COMMIT
"""

# Run inside the namespace by `tcp_connect`: "ok", or the errno's name, at once.
_CONNECT = """
import errno, socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("ok")
except TimeoutError:
    print("timeout")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, str(exc)))
"""


class ControlNamespace:
    """The `etcdlab-ctl` network namespace; `up` and `down` are idempotent."""

    name = NAME
    address = ADDRESS

    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def exists(self) -> bool:
        return self.name in _run(["ip", "netns", "list"]).stdout.split()

    def up(self) -> None:
        """Make (or repair) the namespace, its port on the lab's bridge and its firewall.

        Every step is safe to repeat: after `python -m tests.lab down` and `up` the bridge
        is a new one, and the veth is attached to it again.
        """
        if _run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
            raise LabError(f"no bridge {BRIDGE}: bring the lab up first (python -m tests.lab up)")
        _check_lab_address(self.address)
        if not self.exists():
            _run(["ip", "netns", "add", self.name])
        self._ensure_veth()
        self._in_ns("ip", "link", "set", "lo", "up")
        self._in_ns("ip", "addr", "replace", f"{self.address}/{SUBNET.prefixlen}", "dev", INNER)
        self._in_ns("ip", "link", "set", INNER, "up")
        _run(["ip", "link", "set", OUTER, "master", BRIDGE, "up"])
        self._in_ns("iptables-restore", input=_IPV4_RULES)
        self._in_ns("ip6tables-restore", input=_IPV6_RULES)
        self._check_no_default_route()

    def _ensure_veth(self) -> None:
        """The veth pair, its inner end made directly inside the namespace. An outer end
        whose peer is not in the namespace (left by a namespace some process kept alive
        after `down`) is replaced."""
        outer = _run(["ip", "link", "show", OUTER], check=False).returncode == 0
        inner = self._in_ns("ip", "link", "show", INNER, check=False).returncode == 0
        if outer and inner:
            return
        if outer:
            _run(["ip", "link", "del", OUTER])
        if inner:
            self._in_ns("ip", "link", "del", INNER)
        _run(
            ["ip", "link", "add", OUTER, "type", "veth", "peer", "name", INNER, "netns", self.name]
        )

    def _check_no_default_route(self) -> None:
        """Nothing run in the namespace may leave the machine: no default route, ever."""
        for family in ("-4", "-6"):
            routes = self._in_ns("ip", family, "route", "show", "default").stdout.strip()
            if routes:
                raise LabError(f"{self.name} has a default route ({routes}): refusing")

    def down(self) -> None:
        """Remove the namespace and its veth pair (gone from the bridge too).

        The outer end is deleted first: `ip netns delete` only unmounts the namespace, which
        lives on (with its veth) while a process still runs in it.
        """
        if _run(["ip", "link", "show", OUTER], check=False).returncode == 0:
            _run(["ip", "link", "del", OUTER], check=False)
        if self.exists():
            _run(["ip", "netns", "delete", self.name])

    @contextlib.contextmanager
    def ssh_open_to(self, addresses: Iterable[str]) -> Iterator[None]:
        """Also let SSH (port 22, nothing else) out to `addresses` for a while: a network
        where the hosts' SSH is open to the control side but etcd's ports are not."""
        rules = []
        for address in addresses:
            _check_lab_address(address)
            rules.append(["-d", f"{address}/32", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"])
        for rule in rules:
            self._in_ns("iptables", "-I", "OUTPUT", "1", *rule)
        try:
            yield
        finally:
            for rule in rules:
                self._in_ns("iptables", "-D", "OUTPUT", *rule, check=False)

    def run(
        self, *command: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace (the environment passes through)."""
        return _run([*self.prefix(), *command], check=check, timeout=timeout)

    def tcp_connect(self, address: str, port: int, timeout: float = 5.0) -> str:
        """Try a TCP connect from inside the namespace: "ok", or why not ("EHOSTUNREACH",
        "ECONNREFUSED", "timeout", ...)."""
        _check_lab_address(address)
        proc = self.run(sys.executable, "-c", _CONNECT, address, str(port), str(timeout))
        return proc.stdout.strip()

    def _in_ns(
        self, *command: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return _run([*self.prefix(), *command], check=check, input=input, timeout=60)

    def describe(self) -> str:
        """Addresses, routes and firewall rules inside the namespace, for humans."""
        parts = [
            self._in_ns("ip", "-br", "addr").stdout,
            self._in_ns("ip", "route").stdout,
            self._in_ns("iptables", "-S", "OUTPUT").stdout,
        ]
        return "".join(parts)
