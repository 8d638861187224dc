"""Shared builders for unit tests: a small valid inventory, fake PKI material, and facts of a
host that already has exactly what etcd-deploy wants on it."""

from __future__ import annotations

from pathlib import Path

from orchestrator.core.facts import TEXT_KINDS, HostFacts, RemoteFile
from orchestrator.core.host_plan import DesiredFile, desired_dirs, desired_files
from orchestrator.core.inventory import Host, Inventory
from orchestrator.core.inventory_rules import parse_inventory
from orchestrator.core.ownership import Marker
from orchestrator.core.render import HOST_CERT_KINDS as CERT_KINDS
from orchestrator.core.render import render_etcd_env

TOKEN = "demo-0123456789ab"
MARKER = Marker("demo", "00c0ffee00c0ffee")
CA_PEM = b"-----BEGIN CERTIFICATE-----\nfake CA\n-----END CERTIFICATE-----\n"


def make_inventory(
    tmp_path: Path,
    *,
    version: str = "3.5.30",
    hosts: int = 3,
    flags: dict[str, str] | None = None,
    **cluster: str,
) -> Inventory:
    """A valid inventory in `tmp_path` with hosts etcd1..etcdN at 192.0.2.11...

    `cluster` overrides string keys of [cluster] (e.g. config_dir="/srv/etcd-conf").
    """
    known_hosts = tmp_path / "known_hosts"
    known_hosts.touch()
    lines = ["[cluster]", 'name = "demo"', f'etcd_version = "{version}"']
    lines += [f'{key} = "{value}"' for key, value in cluster.items()]
    if flags:
        lines.append("[cluster.flags]")
        lines += [f'{key} = "{value}"' for key, value in flags.items()]
    lines += ["", "[ssh]", f'known_hosts = "{known_hosts}"']
    for i in range(1, hosts + 1):
        lines += ["", "[[hosts]]", f'name = "etcd{i}"', f'address = "192.0.2.{10 + i}"']
    path = tmp_path / "inventory.toml"
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return parse_inventory(text, path)


def fake_certs(generation: int = 1) -> dict[str, tuple[bytes, bytes]]:
    """kind -> (cert PEM, key PEM); another `generation` gives different bytes."""
    return {
        kind: (
            f"-----BEGIN CERTIFICATE-----\n{kind} cert {generation}\n"
            "-----END CERTIFICATE-----\n".encode(),
            f"-----BEGIN PRIVATE KEY-----\n{kind} key {generation}\n"
            "-----END PRIVATE KEY-----\n".encode(),
        )
        for kind in CERT_KINDS
    }


def env_for(
    inv: Inventory, host: Host, *, state: str = "existing", members: int | None = None
) -> str:
    """etcd.env for `host`, starting with the first `members` hosts (default: all)."""
    chosen = inv.hosts[: members or len(inv.hosts)]
    if host not in chosen:
        chosen = (*chosen, host)
    return render_etcd_env(
        inv,
        host,
        initial_cluster=[(h.name, inv.peer_url(h)) for h in chosen],
        initial_state=state,
        token=TOKEN,
        version=inv.cluster.etcd_version,
    )


def wanted_files(
    inv: Inventory, host: Host | None = None, *, env: str | None = None, generation: int = 1
) -> list[DesiredFile]:
    host = host or inv.hosts[0]
    return desired_files(
        inv,
        host,
        env=env if env is not None else env_for(inv, host),
        ca_pem=CA_PEM,
        certs=fake_certs(generation),
        marker=MARKER,
    )


def converged_facts(
    inv: Inventory,
    files: list[DesiredFile],
    *,
    version: str | None = None,
    active_state: str = "active",
    unit_file_state: str = "enabled",
    has_data: bool = True,
) -> HostFacts:
    """Facts of a host that has exactly `files` (and texts of the non-secret ones)."""
    return HostFacts(
        arch="x86_64",
        etcd_version=version or str(inv.cluster.etcd_version),
        etcd_user=True,
        dirs=dict(desired_dirs(inv)),
        active_state=active_state,
        unit_file_state=unit_file_state,
        active_since="Mon 2024-05-06 10:00:00 UTC" if active_state == "active" else "",
        has_data=has_data,
        files={f.path: RemoteFile(f.sha256, f.mode, f.owner, f.group) for f in files},
        texts={f.path: f.content.decode() for f in files if f.kind in TEXT_KINDS},
        lock="acquired",
        lock_acquired=True,
    )


class NoPreflight:
    """A run context's member links whose preflight passes: what the executor asks before a
    plan's first step (`ssh.etcd_api = "direct"` probes ports; the fakes' runs need none)."""

    def preflight(self) -> None:
        pass
