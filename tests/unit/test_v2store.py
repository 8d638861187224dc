"""The v2-store check before 3.5 -> 3.6: when it applies, the command, and the verdict read
from etcdutl's own output (texts of etcd v3.5.18-v3.5.33 etcdutl/etcdutl/check_command.go)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core import v2store
from tests.unit.helpers import make_inventory


@pytest.mark.parametrize(
    ("currents", "target", "expected"),
    [
        (["3.5.32"], "3.6.14", True),
        (["3.5.33", "3.6.14"], "3.6.14", True),  # one member left on 3.5
        (["3.6.11"], "3.6.14", False),  # patch upgrade within 3.6
        (["3.6.11"], "3.7.1", False),  # 3.6 has no v2 store left to check
        (["3.5.16"], "3.5.30", False),
        (["3.4.23"], "3.5.30", False),
        ([], "3.6.14", False),  # a fresh install
    ],
)
def test_the_check_runs_only_when_a_member_leaves_35_for_36(
    currents: list[str], target: str, expected: bool
) -> None:
    assert v2store.needs_check(currents, target) is expected


def test_the_check_uses_the_hosts_etcdutl_on_the_members_data_dir(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, data_dir="/srv/etcd-data", install_dir="/opt/etcd")
    assert v2store.check_script(inv) == (
        "/opt/etcd/etcdutl check v2store --data-dir /srv/etcd-data 2>&1"
    )


@pytest.mark.parametrize(
    "output",
    [
        "No custom content found in v2store.\n",  # 3.5.18-3.5.31
        "No custom content found in both v2store and WAL records.\n",  # 3.5.32+
    ],
)
def test_membership_only_passes(output: str) -> None:
    assert v2store.problem("etcd1", 0, output, "3.6.14") is None


@pytest.mark.parametrize(
    "output",
    [
        "Error: detected custom content in v2store\n",
        "Error: detected custom v2 content in WAL records\n",
        "Error: detected custom content in both v2store and WAL records\n",
    ],
)
def test_custom_content_is_refused_with_the_workaround(output: str) -> None:
    problem = v2store.problem("etcd2", 1, output, "3.6.14")
    assert problem is not None
    assert problem.startswith("etcd2: its v2 store holds data other than membership (Error:")
    assert "etcd 3.6.14 would refuse to start on it" in problem
    assert "snapshot-count = 1" in problem and "upgrade_3_6" in problem


@pytest.mark.parametrize(
    ("code", "output"),
    [
        (1, 'Error: unknown command "v2store" for "etcdutl check"\n'),  # before 3.5.18
        (127, "sh: 1: /opt/bin/etcdutl: not found\n"),
        (0, ""),  # exit 0 without the clean line is not proof
        (2, "panic: open /var/lib/etcd/member/wal: permission denied\n"),
    ],
)
def test_anything_else_is_no_proof_and_refuses(code: int, output: str) -> None:
    problem = v2store.problem("etcd3", code, output, "3.6.14")
    assert problem is not None
    assert problem.startswith("etcd3: `etcdutl check v2store` could not tell")
    assert f"exit {code}" in problem and "3.5.32 or later" in problem
