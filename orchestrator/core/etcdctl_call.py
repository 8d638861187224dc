"""`etcd-deploy etcdctl`: which member runs etcdctl, and the script that runs it there.

etcdctl runs on the member's host through SSH, with the wrapper `up` installs
(`{install_dir}/etcdctl.sh`: the host's etcdctl client cert, the CA, and its local member's
client URL as the endpoint), so an operator with only SSH access needs no certs of their own.
"""

from __future__ import annotations

import shlex

from orchestrator.core.cluster_view import ClusterView
from orchestrator.core.errors import ClusterUnhealthy
from orchestrator.core.host_paths import wrapper_path
from orchestrator.core.inventory import Host, Inventory

MISSING_WRAPPER_EXIT = 127  # what a shell answers for a command it cannot find


def leader_host(inv: Inventory, view: ClusterView) -> Host:
    """The inventory host whose member leads; ClusterUnhealthy when none does."""
    leader = view.leader_id
    for host in inv.hosts:
        member = view.by_peer_url(inv.peer_url(host))
        if member is not None and leader is not None and member.id == leader:
            return host
    raise ClusterUnhealthy(
        "no inventory member is the leader now: name the member to run etcdctl on with --host"
    )


def endpoint(inv: Inventory) -> str:
    """The endpoint the wrapper gives etcdctl: the host's own member."""
    return f"https://127.0.0.1:{inv.cluster.client_port}"


def remote_script(inv: Inventory, host: Host, args: list[str]) -> str:
    """The script run on `host`: the wrapper with `args`, each quoted (no shell expansion on
    the host), or one clear line when the wrapper is not installed there."""
    wrapper = wrapper_path(inv)
    quoted = " ".join(shlex.quote(a) for a in args)
    return (
        f"if [ ! -x {wrapper} ]; then echo 'etcd-deploy: {wrapper} is not on {host.name}: "
        f"etcd is not installed there (run etcd-deploy up)' >&2; "
        f"exit {MISSING_WRAPPER_EXIT}; fi\n"
        f"exec {wrapper} {quoted}".rstrip()
    )
