"""Version parsing, known-bad releases and upgrade-path rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.errors import SafetyRefusal, UsageError
from orchestrator.core.versions import (
    KNOWN_BAD,
    MIN_SOURCE_PATCH,
    Version,
    check_upgrade_path,
    is_known_bad,
    parse_version,
)


def test_parse() -> None:
    assert parse_version("3.5.1") == Version(3, 5, 1, "")
    with pytest.raises(ValueError, match=r"write the version without the leading v: 3\.6\.0"):
        parse_version("v3.6.0")
    assert parse_version("3.6.0-rc.1") == Version(3, 6, 0, "rc.1")
    assert str(parse_version("3.6.0-rc.1")) == "3.6.0-rc.1"
    assert str(parse_version("3.4.22")) == "3.4.22"
    v = parse_version("3.5.17")
    assert (v.major, v.minor, v.patch, v.suffix) == (3, 5, 17, "")


@pytest.mark.parametrize("text", ["3.5", "3.5.x", "", "3.5.1.2", "latest", "3.5.1-"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid etcd version"):
        parse_version(text)


def test_ordering() -> None:
    ordered = [
        "3.4.22",
        "3.5.0-rc.0",
        "3.5.0",
        "3.5.2",
        "3.5.10",
        "3.6.0-alpha.0",
        "3.6.0-rc.2",
        "3.6.0-rc.10",
        "3.6.0",
        "3.6.1",
    ]
    parsed = [parse_version(t) for t in ordered]
    assert sorted(reversed(parsed)) == parsed
    assert parse_version("3.5.10") > parse_version("3.5.9")


@given(st.integers(0, 9), st.integers(0, 20), st.integers(0, 50), st.integers(0, 50))
def test_ordering_matches_numbers(major: int, minor: int, a: int, b: int) -> None:
    va, vb = Version(major, minor, a), Version(major, minor, b)
    assert (va < vb) == (a < b)
    assert Version(major, minor, a, "rc.1") < va


def test_known_bad() -> None:
    for text in ("3.5.0", "3.5.1", "3.5.2"):
        reason = is_known_bad(text)
        assert reason is not None and "#13766" in reason
    for text in ("3.5.3", "3.4.30", "3.6.0", "3.5.0-rc.1"):
        assert is_known_bad(text) is None
    assert is_known_bad(Version(3, 5, 1)) is not None
    assert KNOWN_BAD and MIN_SOURCE_PATCH == {(3, 5): 32, (3, 6): 11}


def test_fresh_install() -> None:
    path = check_upgrade_path([], "3.5.17", allow_known_bad=False)
    assert path.kind == "install" and path.target == Version(3, 5, 17)


def test_no_change() -> None:
    path = check_upgrade_path(["3.5.17", "3.5.17"], "3.5.17", allow_known_bad=False)
    assert path.kind == "none"


def test_patch_upgrades_are_free() -> None:
    path = check_upgrade_path(["3.5.3", "3.5.17"], "3.5.21", allow_known_bad=False)
    assert path.kind == "patch"
    assert "3.5.3, 3.5.17 -> 3.5.21" in path.detail


def test_minor_upgrade_one_step() -> None:
    assert check_upgrade_path(["3.4.30"] * 3, "3.5.17", False).kind == "minor"
    assert check_upgrade_path(["3.5.32"], "3.6.0", False).kind == "minor"
    assert check_upgrade_path(["3.6.11"], "3.7.0", False).kind == "minor"
    # a half-done upgrade resumes
    assert check_upgrade_path(["3.5.32", "3.6.1"], "3.6.1", False).kind == "minor"


def test_minor_skip_refused() -> None:
    with pytest.raises(SafetyRefusal, match=r"minor-one-at-a-time.*latest 3\.5\.x"):
        check_upgrade_path(["3.4.30"], "3.6.0", False)


@pytest.mark.parametrize(
    ("currents", "target", "minimum"),
    [
        (["3.5.32", "3.5.31"], "3.6.0", "3.5.32"),  # one member short is enough to refuse
        (["3.5.26"], "3.6.5", "3.5.32"),  # the guide's earlier minimum no longer does
        (["3.6.0"], "3.7.0", "3.6.11"),
        (["3.6.10", "3.6.11"], "3.7.1", "3.6.11"),
    ],
)
def test_min_source_patch(currents: list[str], target: str, minimum: str) -> None:
    with pytest.raises(SafetyRefusal) as refused:
        check_upgrade_path(currents, target, False)
    message = str(refused.value)
    assert message.startswith("min-source-patch:")
    assert f"on {minimum} or later first" in message
    assert f"`etcd-deploy upgrade {minimum}`" in message


def test_downgrade_refused() -> None:
    with pytest.raises(SafetyRefusal, match="no-downgrade"):
        check_upgrade_path(["3.5.17"], "3.5.16", False)
    with pytest.raises(SafetyRefusal, match="no-downgrade"):
        check_upgrade_path(["3.6.0", "3.6.0"], "3.5.30", False)


def test_major_refused() -> None:
    with pytest.raises(SafetyRefusal, match="no-major-upgrade"):
        check_upgrade_path(["3.6.5"], "4.0.0", False)


def test_known_bad_target() -> None:
    with pytest.raises(SafetyRefusal, match=r"known-bad-version.*13766"):
        check_upgrade_path(["3.4.30"], "3.5.1", False)
    with pytest.raises(SafetyRefusal, match="known-bad-version"):
        check_upgrade_path([], "3.5.0", False)
    path = check_upgrade_path(["3.4.30"], "3.5.1", allow_known_bad=True)
    assert path.kind == "minor" and "13766" in path.warnings[0]


def test_unsupported_target() -> None:
    with pytest.raises(UsageError, match="not supported"):
        check_upgrade_path([], "3.3.27", False)
