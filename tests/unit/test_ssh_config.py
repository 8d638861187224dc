"""What the local ssh_config says about the way to the hosts (a ProxyJump), read without
running anything it names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orchestrator.adapters.ssh_config import behind_jump_host
from orchestrator.core.errors import PreflightError
from orchestrator.core.inventory import Inventory
from tests.unit.helpers import make_inventory


def _with_config(tmp_path: Path, text: str, **ssh: str) -> Inventory:
    inv = make_inventory(tmp_path)
    config = tmp_path / "ssh_config"
    config.write_text(text)
    return dataclasses.replace(inv, ssh=dataclasses.replace(inv.ssh, config_file=config, **ssh))


def test_the_inventorys_jump_host(tmp_path: Path) -> None:
    assert behind_jump_host(_with_config(tmp_path, "", jump_host="admin@bastion"))
    assert not behind_jump_host(_with_config(tmp_path, "Host *\n  User admin\n"))


def test_a_proxyjump_that_applies_to_a_host(tmp_path: Path) -> None:
    assert behind_jump_host(_with_config(tmp_path, "Host 192.0.2.12\n  ProxyJump bastion\n"))
    assert not behind_jump_host(_with_config(tmp_path, "Host 10.*\n  ProxyJump bastion\n"))
    assert not behind_jump_host(_with_config(tmp_path, "Host *\n  ProxyJump none\n"))


def test_match_exec_is_refused_not_run(tmp_path: Path) -> None:
    witness = tmp_path / "ran"
    text = f'Match exec "touch {witness}"\n  ProxyJump bastion\n'
    with pytest.raises(PreflightError, match="Match exec"):
        behind_jump_host(_with_config(tmp_path, text))
    assert not witness.exists()


def test_an_unreadable_config_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match="unreadable ssh_config"):
        behind_jump_host(_with_config(tmp_path, "Host x\n  ProxyJump\n"))
