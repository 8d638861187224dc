"""`ssh.etcd_api`: which path a run starts on, and what a failed direct connection means."""

from __future__ import annotations

import errno

import pytest

from orchestrator.core import api_route
from orchestrator.core.api_route import DirectFailure, Path, Verdict


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


@pytest.mark.parametrize(
    ("setting", "failure", "on_host", "expected"),
    [
        # a blocked port is the network's doing: auto moves to SSH, direct stops
        ("auto", DirectFailure.BLOCKED, False, Verdict.FALL_BACK),
        ("direct", DirectFailure.BLOCKED, False, Verdict.BLOCKED),
        # refused, and the host shows etcd listening: a firewall's reset
        ("auto", DirectFailure.REFUSED, True, Verdict.FALL_BACK),
        ("direct", DirectFailure.REFUSED, True, Verdict.BLOCKED),
        # refused, nothing listens on the host either: etcd is down there
        ("auto", DirectFailure.REFUSED, False, Verdict.DOWN),
        ("direct", DirectFailure.REFUSED, False, Verdict.DOWN),
    ],
)
def test_verdict(setting: str, failure: DirectFailure, on_host: bool, expected: Verdict) -> None:
    assert api_route.verdict(setting, failure, on_host) is expected


def test_only_a_refused_connection_needs_the_hosts_view() -> None:
    assert api_route.must_ask_host(DirectFailure.REFUSED)
    assert not api_route.must_ask_host(DirectFailure.BLOCKED)


def test_the_blocked_line_names_host_port_and_setting() -> None:
    line = api_route.blocked_message("etcd1", "10.0.0.11", 2379, "No route to host")
    assert "\n" not in line
    for part in ("etcd1", "port 2379 of 10.0.0.11", "No route to host", "ssh.etcd_api", '"ssh"'):
        assert part in line
