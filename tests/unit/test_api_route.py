"""`ssh.etcd_api`: which path a run starts on, and what a failed direct connection means."""

from __future__ import annotations

import errno

import pytest

from orchestrator.core import api_route
from orchestrator.core.api_route import DirectFailure, HostAnswer, Path, Verdict


@pytest.mark.parametrize(
    ("setting", "behind_jump", "expected"),
    [
        ("auto", False, Path.DIRECT),
        ("auto", True, Path.SSH),
        ("ssh", False, Path.SSH),
        ("ssh", True, Path.SSH),
        ("direct", False, Path.DIRECT),
        ("direct", True, Path.DIRECT),  # the operator opened the ports: their call
    ],
)
def test_first_path(setting: str, behind_jump: bool, expected: Path) -> None:
    assert api_route.first_path(setting, behind_jump) is expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), DirectFailure.REFUSED),
        (OSError(errno.EHOSTUNREACH, "No route to host"), DirectFailure.BLOCKED),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), DirectFailure.BLOCKED),
        (TimeoutError("timed out"), DirectFailure.BLOCKED),
        (OSError(errno.ECONNRESET, "reset"), DirectFailure.REFUSED),
    ],
)
def test_classify(error: OSError, expected: DirectFailure) -> None:
    assert api_route.classify(error) is expected


OPEN, CLOSED, NO_SSH = HostAnswer.OPEN, HostAnswer.CLOSED, HostAnswer.NO_SSH
REFUSED, BLOCKED = DirectFailure.REFUSED, DirectFailure.BLOCKED


@pytest.mark.parametrize(
    ("setting", "failure", "on_host", "expected"),
    [
        # blocked on the way, the host answers SSH: the port is closed to us (etcd may not
        # run yet: a new cluster), so auto moves to SSH and direct stops
        ("auto", BLOCKED, OPEN, Verdict.FALL_BACK),
        ("auto", BLOCKED, CLOSED, Verdict.FALL_BACK),
        ("direct", BLOCKED, OPEN, Verdict.BLOCKED),
        ("direct", BLOCKED, CLOSED, Verdict.BLOCKED),
        # blocked, and no SSH either: the host is gone (powered off), not firewalled
        ("auto", BLOCKED, NO_SSH, Verdict.DOWN),
        ("direct", BLOCKED, NO_SSH, Verdict.DOWN),
        # refused while etcd listens on the host: a firewall's reset
        ("auto", REFUSED, OPEN, Verdict.FALL_BACK),
        ("direct", REFUSED, OPEN, Verdict.BLOCKED),
        # refused, nothing listens on the host either (or no SSH): etcd is down there
        ("auto", REFUSED, CLOSED, Verdict.DOWN),
        ("direct", REFUSED, CLOSED, Verdict.DOWN),
        ("auto", REFUSED, NO_SSH, Verdict.DOWN),
    ],
)
def test_verdict(
    setting: str, failure: DirectFailure, on_host: HostAnswer, expected: Verdict
) -> None:
    assert api_route.verdict(setting, failure, on_host) is expected


def test_the_blocked_line_names_host_port_and_setting() -> None:
    line = api_route.blocked_message("etcd1", "10.0.0.11", 2379, "No route to host")
    assert "\n" not in line
    for part in ("etcd1", "port 2379 of 10.0.0.11", "No route to host", "ssh.etcd_api", '"ssh"'):
        assert part in line
