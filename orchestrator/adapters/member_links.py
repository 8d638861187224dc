"""The network under the etcd client: how a TCP connection to a member's port is made,
straight from here or through the run's SSH connection to the member's host
(`ssh.etcd_api`; the rules are `core.api_route`).

An httpcore network backend, so that httpx, TLS and the server-certificate checks are the
same on both paths: the URL still names the member's own address, the certificate is still
checked against it; only the bytes travel differently. A channel goes from the member's
host to its own client URL (the address etcd advertises and listens on).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpcore

from orchestrator.core import api_route
from orchestrator.core.api_route import DirectFailure, HostAnswer, Path, Verdict
from orchestrator.core.errors import EtcdPortBlocked, TransportError
from orchestrator.core.inventory import Host, Inventory

if TYPE_CHECKING:
    from orchestrator.adapters.transport import HostConnection

ConnectionOf = Callable[[str], "HostConnection"]
NO_SSH_MEMO = 30.0  # seconds a host that SSH could not reach is not asked again
# httpcore's own type for socket options (its NetworkBackend signature).
SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class MemberLinks(httpcore.NetworkBackend):
    """Connections to members' ports for one run.

    `conn(name)`: the run's SSH connection to a host (opened on first use: a direct run
    never opens one). `info`: one line for the operator (the fall-back notice)."""

    def __init__(
        self,
        inv: Inventory,
        conn: ConnectionOf,
        info: Callable[[str], None],
        behind_jump_host: Callable[[], bool],
        warm: Callable[[], object] = lambda: None,
    ) -> None:
        self.setting = inv.ssh.etcd_api
        self._inv = inv
        self._hosts = {_key(h.etcd_address): h for h in inv.hosts}
        self._conn = conn
        self._info = info
        self._behind_jump_host = behind_jump_host
        self._warm = warm
        self._warmed = False
        self._path: Path | None = None
        self._no_ssh_until: dict[str, float] = {}  # host -> until when "no SSH" is believed
        self._mutex = threading.Lock()
        self._direct = httpcore.SyncBackend()

    @property
    def path(self) -> Path:
        """The path connections take now (decided on first use: reading ssh_config for a
        ProxyJump costs a little, and a run that never talks to etcd skips it)."""
        with self._mutex:
            if self._path is None:
                self._path = api_route.first_path(self.setting, self._behind_jump_host())
            path = self._path
        if path is Path.SSH:
            self._warm_once()
        return path

    def _warm_once(self) -> None:
        """On the SSH path, every host's connection is about to be needed: `warm` opens them
        all at once in the background (each SSH handshake waits on the network), instead of
        one after the other as calls reach each member."""
        with self._mutex:
            warmed, self._warmed = self._warmed, True
        if not warmed:
            self._warm()

    def preflight(self, timeout: float = 3.0) -> None:
        """With `ssh.etcd_api = "direct"`, before a run changes anything: every member's
        client and peer ports must be reachable from here (the peer port for a few checks:
        a starting member serving its peers, the certificate it serves there). One closed
        to us stops the run now, in one line (refused with nothing listening is fine: etcd
        may not run there yet; a host that answers nothing at all is the command's to
        handle). A no-op for the other settings."""
        if self.setting != "direct":
            return
        ports = (self._inv.cluster.client_port, self._inv.cluster.peer_port)

        def probe(host: Host) -> str | None:
            return next(filter(None, (probe_port(host, port) for port in ports)), None)

        def probe_port(host: Host, port: int) -> str | None:
            try:
                self._direct.connect_tcp(host.etcd_address, port, timeout).close()
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                answer, on_host = self._on_host(host, port, timeout)
                if on_host is not None:
                    on_host.close()
                if api_route.verdict(self.setting, _failure(exc), answer) is Verdict.BLOCKED:
                    return _blocked_line(host, port, exc)
            return None

        with ThreadPoolExecutor(max_workers=min(16, len(self._inv.hosts))) as pool:
            blocked = [line for line in pool.map(probe, self._inv.hosts) if line]
        if blocked:
            more = f" (and {len(blocked) - 1} more host(s))" if len(blocked) > 1 else ""
            raise EtcdPortBlocked(blocked[0] + more)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        member = self._hosts.get(_key(host))
        if self.path is Path.SSH:
            return self._through_ssh(member, host, port, timeout)
        try:
            return self._direct.connect_tcp(host, port, timeout, local_address, socket_options)
        except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
            if member is None:
                raise
            return self._after_direct_failure(member, port, timeout, exc)

    def _after_direct_failure(
        self, member: Host, port: int, timeout: float | None, exc: Exception
    ) -> httpcore.NetworkStream:
        failure = _failure(exc)
        answer, on_host = self._on_host(member, port, timeout)
        if failure is DirectFailure.REFUSED and on_host is not None:
            # etcd may have started listening between the two tries: straight once more
            try:
                direct = self._direct.connect_tcp(member.etcd_address, port, timeout)
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                pass
            else:
                on_host.close()
                return direct
        decision = api_route.verdict(self.setting, failure, answer)
        if decision is not Verdict.FALL_BACK and on_host is not None:
            on_host.close()
        if decision is Verdict.DOWN:
            raise exc
        if decision is Verdict.BLOCKED:
            raise EtcdPortBlocked(_blocked_line(member, port, exc)) from None
        with self._mutex:
            switched, self._path = self._path is not Path.SSH, Path.SSH
        self._warm_once()
        if switched:
            self._info(
                api_route.fallback_message(member.name, member.etcd_address, port, _reason(exc))
            )
        if on_host is None:  # the port is closed on the host too: etcd does not serve yet
            raise exc
        return on_host

    def _on_host(
        self, member: Host, port: int, timeout: float | None
    ) -> tuple[HostAnswer, httpcore.NetworkStream | None]:
        """The member's port tried from its own host, and the connection when it opened."""
        from orchestrator.adapters.transport import TunnelForbidden, TunnelRefused

        with self._mutex:
            if self._no_ssh_until.get(member.name, 0.0) > time.monotonic():
                return HostAnswer.NO_SSH, None
        try:
            return HostAnswer.OPEN, self._tunnel(member.name, member.etcd_address, port, timeout)
        except TunnelRefused:
            return HostAnswer.CLOSED, None
        except TunnelForbidden:
            # only asking: a run that may go straight to the port must not fail on a host
            # whose sshd forbids forwarding; it just cannot tell, nor fall back
            return HostAnswer.NO_SSH, None
        except TransportError:
            with self._mutex:  # a health wait polls a dead member often: do not ask each time
                self._no_ssh_until[member.name] = time.monotonic() + NO_SSH_MEMO
            return HostAnswer.NO_SSH, None

    def _through_ssh(
        self, member: Host | None, address: str, port: int, timeout: float | None
    ) -> httpcore.NetworkStream:
        """A channel from the member's host to its own port; an address that is no inventory
        host (a member the inventory forgot) is reached from the first host SSH reaches."""
        from orchestrator.adapters.transport import TunnelForbidden, TunnelRefused

        relays = [member.name] if member else [h.name for h in self._inv.hosts]
        problems = []
        for name in relays:
            try:
                return self._tunnel(name, address, port, timeout)
            except TunnelRefused:
                raise httpcore.ConnectError(
                    f"nothing accepts connections on {address}:{port} (tried on {name} through SSH)"
                ) from None
            except TunnelForbidden:
                raise
            except TransportError as exc:
                problems.append(str(exc))
        raise httpcore.ConnectError("; ".join(problems) or f"no host to reach {address} from")

    def _tunnel(
        self, name: str, address: str, port: int, timeout: float | None
    ) -> httpcore.NetworkStream:
        from orchestrator.adapters.channel_stream import ChannelStream

        return ChannelStream(self._conn(name).tunnel(address, port, timeout))


def _failure(exc: Exception) -> DirectFailure:
    """Why httpcore's direct connect failed (its OSError is the exception's cause)."""
    if isinstance(exc, httpcore.ConnectTimeout):
        return DirectFailure.BLOCKED
    cause = exc.__cause__
    return api_route.classify(cause) if isinstance(cause, OSError) else DirectFailure.REFUSED


def _key(address: str) -> str:
    return address.strip("[]").lower()


def _reason(exc: Exception) -> str:
    """Why a direct connect failed, in a few words (its OSError's, when there is one)."""
    error = exc.__cause__ or exc
    text = getattr(error, "strerror", None) or str(error)
    return text or type(error).__name__


def _blocked_line(member: Host, port: int, exc: Exception) -> str:
    return api_route.blocked_message(member.name, member.etcd_address, port, _reason(exc))
