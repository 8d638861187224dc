"""What one run carries: the inventory, the UI, SSH connections, the local PKI, an etcd client."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.etcd_api import EtcdClient
from orchestrator.inventory import Host, Inventory, load_inventory
from orchestrator.pki import LocalPKI
from orchestrator.transport import HostConnection, Pool
from orchestrator.ui import UI


@dataclass
class RunContext:
    inv: Inventory
    ui: UI
    pool: Pool = field(init=False)
    pki: LocalPKI = field(init=False)
    _client: EtcdClient | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.pool = Pool(self.inv, lambda host, m: self.ui.debug(host, m))
        self.pki = LocalPKI(self.inv.cluster.state_dir, self.inv.cluster.name)

    def reload(self) -> None:
        """Read the inventory file again (after this run edited it)."""
        self.close()
        self._client = None
        self.inv = load_inventory(self.inv.path)
        self.__post_init__()

    def conn(self, host: Host | str) -> HostConnection:
        return self.pool[host if isinstance(host, str) else host.name]

    def client(self) -> EtcdClient:
        """The control machine's etcd client (its own cert, the cluster CA)."""
        if self._client is None:
            self.pki.ensure_ca(self.inv.cluster.ca_days)
            cert, key = self.pki.ensure_client_cert(self.inv.cluster.cert_days)
            self._client = EtcdClient(
                list(self.inv.client_urls()), ca=self.pki.trust_path(), cert=cert, key=key
            )
        return self._client

    def reset_client(self) -> None:
        """Drop the etcd client (after the local CA or client cert changed)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self.pool.close()
