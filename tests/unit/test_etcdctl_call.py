"""`etcd-deploy etcdctl`: the member chosen and the script run on it."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from orchestrator.core import etcdctl_call
from orchestrator.core.errors import ClusterUnhealthy
from tests.unit.helpers import make_inventory
from tests.unit.views import view


def test_the_leader_runs_it(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path)
    assert etcdctl_call.leader_host(inv, view(inv, leader="etcd2")).name == "etcd2"


def test_no_leader_asks_for_a_host(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path)
    leaderless = view(inv, down={"etcd1", "etcd2", "etcd3"}, leader="etcd1")
    with pytest.raises(ClusterUnhealthy, match="--host"):
        etcdctl_call.leader_host(inv, leaderless)


def test_arguments_reach_etcdctl_unexpanded(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, install_dir="/usr/local/bin")
    args = ["put", "/k", "$(reboot) 'quoted' *"]
    script = etcdctl_call.remote_script(inv, inv.hosts[0], args)
    last = script.splitlines()[-1]
    assert shlex.split(last) == ["exec", "/usr/local/bin/etcdctl.sh", *args]
    assert "[ ! -x /usr/local/bin/etcdctl.sh ]" in script
    assert f"exit {etcdctl_call.MISSING_WRAPPER_EXIT}" in script


def test_endpoint_is_the_local_member(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path)
    assert etcdctl_call.endpoint(inv) == "https://127.0.0.1:2379"
