"""SSH to the hosts: one connection per host for the whole run, strict host keys, sudo,
binary stdin, and a pool that runs per-host work in parallel.

fabric builds the connection (ssh_config, ProxyJump, identity files); paramiko channels run
the commands, because fabric/invoke decode stdin as text and we stream tarballs. fabric never
checks host keys by itself (fabric #1804): every connection, jump hosts included, gets the
inventory's known_hosts and a policy that rejects unknown keys.
"""

from __future__ import annotations

import functools
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import paramiko

# fabric ships no type information and no stub package exists for it (paramiko's: types-paramiko).
from fabric import Config, Connection  # type: ignore[import-untyped]

from orchestrator.adapters.ssh_config import check_local_ssh_files
from orchestrator.core.errors import TransportError
from orchestrator.core.inventory import Host, Inventory

T = TypeVar("T")
CONNECT_TIMEOUT = 10
CHUNK = 256 * 1024
_OPEN_ADMINISTRATIVELY_PROHIBITED = 1  # RFC 4254 section 5.1


class TunnelRefused(ConnectionRefusedError):
    """Nothing accepted a tunnelled connection on the host's side (the port is closed there)."""


class TunnelForbidden(TransportError):
    """sshd refuses to open TCP channels for us (AllowTcpForwarding no, PermitOpen)."""


class _AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """OpenSSH's `accept-new`: record unknown keys, still refuse changed ones."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts
        self._lock = threading.Lock()

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        with self._lock:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with self.known_hosts.open("a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


def _gcm_first(sock: object, **kwargs: object) -> paramiko.Transport:
    """A paramiko transport that offers AES-GCM first, and opens channels within
    CONNECT_TIMEOUT. AES-GCM is an AEAD cipher, one pass over each
    packet where AES-CTR needs a separate HMAC. paramiko does that work in Python's threads,
    so it counts: 158 against 96 MB/s for one command's output on the lab, and a snapshot
    through SSH 1.5x faster (bench/). Every other cipher stays on offer, in paramiko's order."""
    transport = paramiko.Transport(sock, **kwargs)  # type: ignore[arg-type]
    # Opening a channel (a jump host's hop, a tunnel to a member) waits this long at most,
    # not paramiko's hour: through a bastion, a dead host's channel never opens.
    transport.channel_timeout = CONNECT_TIMEOUT
    options = transport.get_security_options()
    gcm = tuple(c for c in options.ciphers if c.endswith("-gcm@openssh.com"))
    options.ciphers = gcm + tuple(c for c in options.ciphers if c not in gcm)
    return transport


@dataclass
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class Counters:
    """What a connection sent, for benchmarks (`bench/`)."""

    commands: int = 0
    bytes_sent: int = 0


@dataclass
class HostConnection:
    """One SSH connection to one host, opened lazily and reused for the whole run."""

    inv: Inventory
    host: Host
    log: Callable[[str], None] = field(default=lambda _m: None)
    counters: Counters = field(default_factory=Counters)
    _conn: Connection | None = None
    # open/close from two threads (the run's, and the lock renewal's) must not race: one
    # connection, not two. Commands themselves are channels of one paramiko Transport,
    # which is thread-safe.
    _mutex: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.host.name

    def _build(self) -> Connection:
        ssh = self.inv.ssh
        config = Config(runtime_ssh_path=str(ssh.config_file)) if ssh.config_file else Config()
        connect_kwargs: dict[str, object] = {
            "banner_timeout": CONNECT_TIMEOUT,
            "auth_timeout": CONNECT_TIMEOUT,
            "transport_factory": _gcm_first,
        }
        if ssh.identity_file:
            connect_kwargs["key_filename"] = [str(ssh.identity_file)]
            connect_kwargs["look_for_keys"] = False
        gateway = (
            Connection(
                ssh.jump_host,
                config=config,
                connect_timeout=CONNECT_TIMEOUT,
                connect_kwargs=dict(connect_kwargs),
            )
            if ssh.jump_host
            else None
        )
        conn = Connection(
            self.host.address,
            user=self.host.ssh_user,
            port=self.host.ssh_port,
            config=config,
            gateway=gateway,
            connect_timeout=CONNECT_TIMEOUT,
            connect_kwargs=connect_kwargs,
        )
        self._check_host_keys(conn)
        return conn

    def _check_host_keys(self, conn: Connection) -> None:
        """Load known_hosts and refuse unknown keys, on this hop and every jump host."""
        hop: object = conn
        while isinstance(hop, Connection):
            if self.inv.ssh.known_hosts.exists():
                hop.client.load_host_keys(str(self.inv.ssh.known_hosts))
            if self.inv.ssh.host_key_check == "accept-new":
                hop.client.set_missing_host_key_policy(_AcceptNewPolicy(self.inv.ssh.known_hosts))
            else:
                hop.client.set_missing_host_key_policy(paramiko.RejectPolicy())
            hop = hop.gateway

    def open(self) -> None:
        with self._mutex:
            self._open()

    def _open(self) -> None:
        if self._conn is not None and self._conn.is_connected:
            return
        conn = self._build()
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise TransportError(
                self.name,
                (
                    f"host key for {exc.hostname} does not match {self.inv.ssh.known_hosts} "
                    f"(got {exc.key.get_name()} {exc.key.get_fingerprint().hex()}): "
                    "refusing to connect; "
                    "if the host was reinstalled, verify its new key and update known_hosts"
                ),
            ) from None
        except paramiko.SSHException as exc:
            text = str(exc)
            if "not found in known_hosts" in text:
                text = (
                    f"{text}: the host key of {self.host.address} is unknown; add it to "
                    f'{self.inv.ssh.known_hosts} (or set ssh.host_key_check = "accept-new")'
                )
            raise TransportError(self.name, f"SSH to {self._target()} failed: {text}") from None
        except (OSError, EOFError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
            raise TransportError(self.name, f"cannot reach {self._target()}: {reason}") from None
        self._conn = conn

    def _target(self) -> str:
        return f"{self.host.ssh_user}@{self.host.address}:{self.host.ssh_port}"

    def close(self) -> None:
        with self._mutex:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def tunnel(self, address: str, port: int, timeout: float | None = None) -> paramiko.Channel:
        """A TCP connection from the host to address:port, carried by this SSH connection
        (a direct-tcpip channel, what `ssh -L` uses: nothing runs on the host for it).

        Raises TunnelRefused when nothing accepts the connection on the host's side,
        TransportError when SSH itself fails or sshd forbids forwarding."""
        self.open()
        conn = self._conn
        transport = conn.client.get_transport() if conn is not None else None
        if transport is None or not transport.is_active():
            self.close()
            raise TransportError(self.name, f"SSH connection to {self._target()} was lost")
        try:
            return transport.open_channel(
                "direct-tcpip",
                (address.strip("[]"), port),
                ("127.0.0.1", 0),
                timeout=max(timeout or 0.0, CONNECT_TIMEOUT),  # one round trip; refusals are quick
            )
        except paramiko.ChannelException as exc:
            if exc.code == _OPEN_ADMINISTRATIVELY_PROHIBITED:
                raise TunnelForbidden(
                    self.name,
                    f"sshd on {self.host.address} refuses TCP forwarding (AllowTcpForwarding "
                    f"or PermitOpen), which etcd's API through SSH needs: allow it for "
                    f'{self.host.ssh_user}, or set ssh.etcd_api = "direct"',
                ) from None
            raise TunnelRefused(f"{address}:{port} on {self.name}: {exc.text}") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if not transport.is_active():  # the connection broke: the next use reconnects
                self.close()
            raise TransportError(
                self.name, f"SSH channel to {address}:{port} failed: {exc or type(exc).__name__}"
            ) from None

    def wrap(self, script: str) -> str:
        """The command line for a shell script, under sudo when the inventory asks for it."""
        shell = "sh -c " + shlex.quote(script)
        return f"sudo -n {shell}" if self.inv.ssh.sudo else shell

    def run(
        self,
        script: str,
        *,
        stdin: bytes | Sequence[bytes] | None = None,
        check: bool = True,
        timeout: float = 300,
        quiet: bool = False,
        progress: Callable[[int, int], None] | None = None,
        side: bool = False,
        sinks: tuple[Callable[[bytes], object], Callable[[bytes], object]] | None = None,
    ) -> CommandResult:
        """Run a shell script on the host. Secrets travel only on stdin, never in `script`;
        `stdin` may come in parts, sent one after the other (no copy joins them). With
        `sinks` (stdout's, stderr's), output goes there as it comes (`stream`) and the
        result's stdout and stderr are empty.

        `side`: a command from another thread beside the run's own (the lock renewal): its
        failure never closes the connection under the run's commands, nor is it counted."""
        self.open()
        command = self.wrap(script)
        parts = [stdin] if isinstance(stdin, bytes) else list(stdin) if stdin is not None else None
        if not quiet:
            size = sum(len(p) for p in parts or [])
            self.log(f"$ {script.strip()}" + (f"  (<{size} bytes on stdin)" if parts else ""))
        if not side:
            self.counters.commands += 1
        try:
            code, out, err = self._exec(command, parts, timeout, progress, sinks)
        except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
            if not side:
                self.close()
            raise TransportError(
                self.name,
                f"command failed to run ({exc.__class__.__name__}: "
                f"{exc}): {script.strip().splitlines()[0][:120]}",
            ) from None
        result = CommandResult(
            script, code, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if check and not result.ok:
            first = script.strip().splitlines()[0][:120]
            detail = (result.stderr.strip() or result.stdout.strip())[-800:]
            raise TransportError(self.name, f"`{first}` exited {code}: {detail}")
        return result

    def stream(
        self,
        script: str,
        sinks: tuple[Callable[[bytes], object], Callable[[bytes], object]],
        *,
        timeout: float = 24 * 3600,
    ) -> int:
        """Run a script whose output goes to `sinks` (stdout's, stderr's) as it comes, for an
        operator's command; returns its exit code."""
        return self.run(script, check=False, timeout=timeout, sinks=sinks).exit_code

    def _exec(
        self,
        command: str,
        parts: list[bytes] | None,
        timeout: float,
        progress: Callable[[int, int], None] | None,
        sinks: tuple[Callable[[bytes], object], Callable[[bytes], object]] | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run `command` in a channel; stdout and stderr are collected, or handed to `sinks`
        (stdout's, stderr's) as they arrive (then the returned bytes are empty)."""
        conn = self._conn  # another thread may close it meanwhile: then EOFError, as for a cut
        if conn is None:
            raise EOFError("connection closed")
        transport = conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise EOFError("connection closed")
        chan = transport.open_session(timeout=CONNECT_TIMEOUT)
        chan.settimeout(timeout)
        chan.exec_command(command)
        out, err = bytearray(), bytearray()
        to_out, to_err = sinks or (out.extend, err.extend)
        total, sent = sum(len(p) for p in parts or []), 0
        for part in parts or []:
            for start in range(0, len(part), CHUNK):
                chunk = part[start : start + CHUNK]
                chan.sendall(chunk)
                sent += len(chunk)
                self.counters.bytes_sent += len(chunk)
                if progress:
                    progress(sent, total)
                while chan.recv_ready():
                    to_out(chan.recv(CHUNK))
                while chan.recv_stderr_ready():
                    to_err(chan.recv_stderr(CHUNK))
        chan.shutdown_write()
        deadline = time.monotonic() + timeout
        # sshd may send the exit status before the last output: done only once the output's
        # EOF has arrived too and both buffers are drained.
        while True:
            finished = chan.exit_status_ready() and (chan.eof_received or chan.closed)
            if chan.recv_ready():
                to_out(chan.recv(CHUNK))
            elif chan.recv_stderr_ready():
                to_err(chan.recv_stderr(CHUNK))
            elif finished:  # read before the buffers were checked: nothing can follow
                break
            elif time.monotonic() > deadline:
                chan.close()
                raise TimeoutError(f"no answer within {timeout:.0f} s")
            elif chan.exit_status_ready():
                time.sleep(0.001)  # exit status in, output EOF still on its way
            else:
                chan.status_event.wait(0.01)
        code = chan.recv_exit_status()
        chan.close()
        return code, bytes(out), bytes(err)


@dataclass
class HostResult(Generic[T]):
    host: str
    value: T | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Pool:
    """The run's connections, one per host, and parallel per-host work."""

    def __init__(self, inv: Inventory, log: Callable[[str, str], None]) -> None:
        self.inv = inv
        check_local_ssh_files(inv)
        self.connections = {
            h.name: HostConnection(inv, h, log=functools.partial(log, h.name)) for h in inv.hosts
        }

    def __getitem__(self, name: str) -> HostConnection:
        return self.connections[name]

    def map(
        self, fn: Callable[[HostConnection], T], names: Iterable[str]
    ) -> dict[str, HostResult[T]]:
        """Run `fn` for each host in parallel; every host gets a result or its own error."""
        return self.start(fn, names).results()

    def start(self, fn: Callable[[HostConnection], T], names: Iterable[str]) -> Pending[T]:
        """Like `map`, without waiting: each host's result can be awaited on its own."""
        names = list(names)
        executor = ThreadPoolExecutor(max_workers=max(1, min(16, len(names))))

        def one(name: str) -> HostResult[T]:
            try:
                return HostResult(name, value=fn(self.connections[name]))
            except Exception as exc:
                return HostResult(name, error=exc)

        pending = Pending({n: executor.submit(one, n) for n in names})
        executor.shutdown(wait=False)
        return pending

    def close(self) -> None:
        for conn in self.connections.values():
            conn.close()


@dataclass
class Pending(Generic[T]):
    """Per-host work started by `Pool.start`."""

    futures: dict[str, Future[HostResult[T]]]

    def result(self, name: str) -> HostResult[T]:
        return self.futures[name].result()

    def failed_so_far(self) -> bool:
        return any(f.done() and not f.result().ok for f in self.futures.values())

    def results(self) -> dict[str, HostResult[T]]:
        """Wait for every host."""
        return {n: f.result() for n, f in self.futures.items()}
