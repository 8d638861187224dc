"""What one run carries: the inventory, the UI, SSH connections, the local PKI, an etcd client."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from orchestrator.adapters.etcd_api import EtcdClient
from orchestrator.adapters.inventory_file import load_inventory
from orchestrator.adapters.lock import LeaseRefresher, StateLock
from orchestrator.adapters.member_links import MemberLinks
from orchestrator.adapters.pki import LocalPKI
from orchestrator.adapters.ssh_config import behind_jump_host
from orchestrator.core.host_lock import LockOwner
from orchestrator.core.inventory import Host, Inventory
from orchestrator.core.ownership import Marker
from orchestrator.ui import UI

if TYPE_CHECKING:
    from orchestrator.adapters.transport import HostConnection, Pool


class RunContext:
    """SSH connections and the etcd client are made on first use: `status` opens no SSH
    connection unless etcd's API goes through SSH (`ssh.etcd_api`)."""

    def __init__(self, inv: Inventory, ui: UI) -> None:
        self.inv = inv
        self.ui = ui
        self.pki = LocalPKI(inv.cluster.state_dir, inv.cluster.name)
        self._pool: Pool | None = None
        self._client: EtcdClient | None = None
        self._links: MemberLinks | None = None
        self._state_lock = StateLock(inv.cluster.state_dir)
        self._pool_mutex = threading.Lock()  # the lease refresher's thread reads the pool too
        self.leases: LeaseRefresher | None = None  # renews the host locks (workflows.hosts)

    @property
    def pool(self) -> Pool:
        with self._pool_mutex:
            if self._pool is None:
                from orchestrator.adapters.transport import Pool

                self._pool = Pool(self.inv, lambda host, m: self.ui.debug(host, m))
            return self._pool

    def open_pool(self) -> Pool | None:
        """The pool when made already (never makes one: for the lease refresher's thread)."""
        with self._pool_mutex:
            return self._pool

    @property
    def ssh_used(self) -> bool:
        return self._pool is not None

    def lock_state(self, owner: LockOwner) -> None:
        """Hold the state dir's lock for the rest of the run (a no-op when held already).
        Taken before the first local change: CA, certs, inventory edits."""
        self._state_lock.acquire(owner)

    def marker(self, *, create: bool = True) -> Marker:
        """The marker of this cluster's folders on the hosts: its name and the state dir's
        id (made now when `create`, under the state lock; "" when absent otherwise)."""
        return Marker(self.inv.cluster.name, self.pki.cluster_id(create=create))

    def reload(self, inv: Inventory | None = None) -> None:
        """Read the inventory file again (after this run edited it), or take `inv` (a dry
        run's edit, never written); the state lock stays."""
        self._close_connections()
        self._links = None
        self.inv = inv or load_inventory(self.inv.path)
        self.pki = LocalPKI(self.inv.cluster.state_dir, self.inv.cluster.name)

    def conn(self, host: Host | str) -> HostConnection:
        return self.pool[host if isinstance(host, str) else host.name]

    def client(self) -> EtcdClient:
        """The control machine's etcd client (its own cert, the cluster CA)."""
        if self._client is None:
            self.pki.require_ca()
            cert, key = self.pki.ensure_client_cert(self.inv.cluster.cert_days)
            self._client = EtcdClient(
                list(self.inv.client_urls()),
                ca=self.pki.trust_path(),
                cert=cert,
                key=key,
                network=self.links(),
            )
        return self._client

    def links(self) -> MemberLinks:
        """How this run reaches members' ports (`ssh.etcd_api`): one per run (kept when the
        client is made again), so a fall-back to SSH lasts for the rest of the run."""
        if self._links is None:
            self._links = MemberLinks(
                self.inv,
                conn=self.conn,
                info=lambda m: self.ui.info("etcd-api", m),
                behind_jump_host=lambda: behind_jump_host(self.inv),
                warm=self._open_all_in_background,
            )
        return self._links

    def _open_all_in_background(self) -> None:
        """Start opening every host's SSH connection (each host's own use reports failures)."""
        self.pool.start(lambda conn: conn.open(), [h.name for h in self.inv.hosts])

    def reset_client(self) -> None:
        """Drop the etcd client (after the local CA or client cert changed)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        """End of the run: lock renewals stopped, connections closed, the state lock let go."""
        if self.leases is not None:
            self.leases.stop()
        self._close_connections()
        self._state_lock.release()

    def _close_connections(self) -> None:
        self.reset_client()
        with self._pool_mutex:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
