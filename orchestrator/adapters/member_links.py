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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpcore

from orchestrator.core import api_route
from orchestrator.core.api_route import DirectFailure, Path, Verdict
from orchestrator.core.errors import EtcdPortBlocked, TransportError
from orchestrator.core.inventory import Host, Inventory

if TYPE_CHECKING:
    from orchestrator.adapters.transport import HostConnection

ConnectionOf = Callable[[str], "HostConnection"]
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
    ) -> None:
        self.setting = inv.ssh.etcd_api
        self._inv = inv
        self._hosts = {_key(h.etcd_address): h for h in inv.hosts}
        self._relays = [h.name for h in inv.hosts]
        self._conn = conn
        self._info = info
        self._behind_jump_host = behind_jump_host
        self._path: Path | None = None
        self._mutex = threading.Lock()
        self._direct = httpcore.SyncBackend()

    @property
    def path(self) -> Path:
        """The path connections take now (decided on first use: reading ssh_config for a
        ProxyJump costs a little, and a run that never talks to etcd skips it)."""
        with self._mutex:
            if self._path is None:
                self._path = api_route.first_path(self.setting, self._behind_jump_host())
            return self._path

    def preflight(self, timeout: float = 3.0) -> None:
        """With `ssh.etcd_api = "direct"`, before a run changes anything: every member's
        client port must be reachable from here. A blocked one stops the run now, in one line
        (a refused one is fine: etcd may not run there yet). A no-op for the other settings,
        which never need the port."""
        if self.setting != "direct":
            return
        port = self._inv.cluster.client_port

        def probe(host: Host) -> str | None:
            try:
                self._direct.connect_tcp(host.etcd_address, port, timeout).close()
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                if _failure(exc) is DirectFailure.BLOCKED:
                    return api_route.blocked_message(
                        host.name, host.etcd_address, port, _reason(exc.__cause__ or exc)
                    )
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
        reason = _reason(exc.__cause__ or exc)
        on_host: httpcore.NetworkStream | None = None
        if api_route.must_ask_host(failure):
            on_host = self._on_host(member, port, timeout)
        decision = api_route.verdict(self.setting, failure, on_host is not None)
        if decision is Verdict.DOWN:
            raise exc
        if on_host is not None and decision is not Verdict.FALL_BACK:
            on_host.close()
        if decision is Verdict.BLOCKED:
            raise EtcdPortBlocked(
                api_route.blocked_message(member.name, member.etcd_address, port, reason)
            ) from None
        with self._mutex:
            switched, self._path = self._path is not Path.SSH, Path.SSH
        if switched:
            self._info(api_route.fallback_message(member.name, member.etcd_address, port, reason))
        return on_host or self._through_ssh(member, member.etcd_address, port, timeout)

    def _on_host(
        self, member: Host, port: int, timeout: float | None
    ) -> httpcore.NetworkStream | None:
        """A connection to the member's port made on its own host, or None when nothing
        accepts it there or the host cannot be reached over SSH either."""
        try:
            return self._through_ssh(member, member.etcd_address, port, timeout)
        except httpcore.ConnectError:
            return None

    def _through_ssh(
        self, member: Host | None, address: str, port: int, timeout: float | None
    ) -> httpcore.NetworkStream:
        """A channel from the member's host to its own port; an address that is no inventory
        host (a member the inventory forgot) is reached from the first host SSH reaches."""
        from orchestrator.adapters.channel_stream import ChannelStream
        from orchestrator.adapters.transport import TunnelForbidden, TunnelRefused

        relays = [member.name] if member else self._relays
        problems = []
        for name in relays:
            try:
                channel = self._conn(name).tunnel(address, port, timeout or 10)
            except TunnelRefused:
                raise httpcore.ConnectError(
                    f"nothing accepts connections on {address}:{port} (tried on {name} through SSH)"
                ) from None
            except TunnelForbidden:
                raise
            except TransportError as exc:
                problems.append(str(exc))
                continue
            return ChannelStream(channel)
        raise httpcore.ConnectError("; ".join(problems) or f"no host to reach {address} from")


def _failure(exc: Exception) -> DirectFailure:
    """Why httpcore's direct connect failed (its OSError is the exception's cause)."""
    if isinstance(exc, httpcore.ConnectTimeout):
        return DirectFailure.BLOCKED
    cause = exc.__cause__
    return api_route.classify(cause) if isinstance(cause, OSError) else DirectFailure.REFUSED


def _key(address: str) -> str:
    return address.strip("[]").lower()


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return text or type(error).__name__
