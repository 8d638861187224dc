"""orchestrator.core.rules: one definition of every rule, applied the same way everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.adapters.inventory_file import load_inventory
from orchestrator.core import (
    inventory,
    inventory_rules,
    inventory_schema,
    inventory_values,
    render,
    rules,
    versions,
)
from orchestrator.core.errors import InventoryError, UsageError
from orchestrator.core.render import resolve_flags
from orchestrator.core.rules import (
    MANAGED_FLAGS,
    REFUSED_FLAGS,
    flag_problem,
    needs_release_pin,
    redact_url,
    release_pin_problem,
    system_folder,
    version_problem,
)
from orchestrator.core.versions import check_upgrade_path, supported_version
from tests.unit.helpers import make_inventory

# --------------------------------------------------------------------------- one home


def test_no_module_keeps_its_own_copy() -> None:
    for module in (inventory, inventory_values, inventory_schema, inventory_rules):
        assert not hasattr(module, "_MANAGED_FLAGS")
        assert not hasattr(module, "_SYSTEM_DIRS")
        assert not hasattr(module, "_VERSION")
    assert not hasattr(render, "MANAGED_FLAGS")
    assert not hasattr(render, "_FLAG_NAME_RE")
    assert versions.parse_version is rules.parse_version
    assert versions.Version is rules.Version
    assert versions.KNOWN_BAD is rules.KNOWN_BAD
    assert not set(MANAGED_FLAGS) & set(REFUSED_FLAGS)


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize("flag", sorted({*MANAGED_FLAGS, *REFUSED_FLAGS}))
def test_inventory_and_render_refuse_the_same_flags_the_same_way(tmp_path: Path, flag: str) -> None:
    problem = flag_problem(flag)
    assert problem is not None and problem.startswith(f"--{flag} is ")
    with pytest.raises(InventoryError) as caught:
        make_inventory(tmp_path, flags={flag: "x"})
    assert str(caught.value).endswith(f"cluster.flags.{flag}: {problem}")
    with pytest.raises(UsageError) as refused:
        resolve_flags({flag: "x"}, rules.parse_version("3.5.17"))
    assert str(refused.value) == f"cluster.flags.{flag}: {problem}"


def test_wal_dir_is_refused_with_the_reason() -> None:
    problem = flag_problem("wal-dir") or ""
    assert "a separate WAL folder is not supported yet" in problem
    assert "put cluster.data_dir on the fast disk instead" in problem


@pytest.mark.parametrize("flag", ["enable-pprof", "snapshot-count", "quota-backend-bytes"])
def test_other_flags_are_allowed(flag: str) -> None:
    assert flag_problem(flag) is None


def test_flag_names() -> None:
    assert flag_problem("--snapshot-count") == "write flag names without leading dashes: " + (
        "'snapshot-count'"
    )
    assert "invalid etcd flag name" in (flag_problem("Snapshot_Count") or "")


# --------------------------------------------------------------------------- folders


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("/", "/"),
        ("/etc", "/etc"),
        ("/etc/ssh", "/etc"),
        ("/etc/systemd/system", "/etc"),
        ("/home", "/home"),
        ("/home/admin", "/home"),
        ("/root/etcd", "/root"),
        ("/usr/local/etcd", "/usr"),
        ("/boot/x", "/boot"),
        ("/var/lib", "/var/lib"),
        ("/var", "/var"),
        ("/proc/1", "/proc"),
        ("/sys/fs", "/sys"),
        ("/dev/shm/etcd", "/dev"),
        ("/run/etcd", "/run"),
        ("/tmp/etcd", "/tmp"),
        ("/var/tmp/etcd", "/var/tmp"),
        ("/bin", "/bin"),
        ("/sbin/x", "/sbin"),
        ("/lib64/x", "/lib64"),
        ("/libx32", "/libx32"),
        ("/var/log/etcd", "/var/log"),
        ("/var/cache/etcd", "/var/cache"),
        ("/var/spool/etcd", "/var/spool"),
        ("/var/mail/etcd", "/var/mail"),
        ("/srv", "/srv"),
        ("/mnt", "/mnt"),
        ("/media", "/media"),
        ("/opt", "/opt"),
        ("/opt/bin", "/opt/bin"),
    ],
)
def test_system_folders_and_their_children_are_refused(path: str, found: str) -> None:
    assert system_folder(path, "data_dir") == found
    assert system_folder(path, "config_dir") == found


@pytest.mark.parametrize(
    "path",
    [
        "/var/lib/etcd",
        "/var/lib/etcd-foo",
        "/etc/etcd",
        "/etc/etcd-prod",
        "/etc/etcd/x",
        "/srv/etcd",
        "/mnt/nvme0/etcd",
        "/data",
        "/data/etcd",
        "/opt/etcd",
        "/media/disk/etcd",
        "/var/etcd",
    ],
)
def test_folders_of_their_own_are_fine(path: str) -> None:
    assert system_folder(path, "data_dir") is None


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("/opt/bin", None),
        ("/usr/local/bin", None),
        ("/usr/bin", None),
        ("/bin", None),
        ("/etc/bin", "/etc"),
        ("/usr", "/usr"),
        ("/tmp/bin", "/tmp"),
        ("/home/a/bin", "/home"),
    ],
)
def test_install_dir_rule(path: str, found: str | None) -> None:
    assert system_folder(path, "install_dir") == found


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3.5.17", None),
        ("3.4.0", None),
        ("3.6.1", None),
        ("v3.5.18", "write the version without the leading v: 3.5.18"),
        ("V3.5.18", "write the version without the leading v: 3.5.18"),
        ("3.6.0-rc.1", "etcd 3.6.0-rc.1 is a pre-release: etcd-deploy deploys releases only"),
        ("3.3.25", "etcd 3.3.25 is not supported: etcd-deploy needs 3.4.0 or later"),
        ("3.5", "invalid etcd version '3.5': expected X.Y.Z"),
        ("latest", "invalid etcd version 'latest'"),
    ],
)
def test_version_rule(text: str, message: str | None) -> None:
    problem = version_problem(text)
    if message is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(message)


@pytest.mark.parametrize("text", ["v3.5.18", "3.6.0-rc.1", "3.3.25", "3.5"])
def test_inventory_and_upgrade_say_the_same(tmp_path: Path, text: str) -> None:
    message = version_problem(text)
    assert message is not None
    with pytest.raises(InventoryError) as caught:
        make_inventory(tmp_path, version=text)
    assert str(caught.value).endswith(f"cluster.etcd_version: {message}")
    with pytest.raises(UsageError) as refused:
        check_upgrade_path([], text)
    assert str(refused.value) == message
    with pytest.raises(UsageError, match=re.escape(message)):
        supported_version(text)


def test_known_bad_range_warns_at_load(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, version="3.5.2")
    assert any("known-bad" in w and "etcd-io/etcd#13766" in w for w in inv.warnings)
    assert make_inventory(tmp_path, version="3.5.20").warnings == ()


# --------------------------------------------------------------------------- releases


REDACTED = """\
https://user:pass@host/x     https://user:***@host/x
https://token@host/x         https://***@host/x
http://u:p@w@host:8080/x/y   http://u:***@host:8080/x/y
https://host/x               https://host/x
https://host/a@b             https://host/a@b
/srv/releases                /srv/releases
"""


def test_redact_url() -> None:
    for line in REDACTED.splitlines():
        url, shown = line.split()
        assert redact_url(url) == shown, url


@pytest.mark.parametrize(
    ("url", "needs"),
    [
        ("http://192.0.2.1/etcd", True),
        ("http://mirror.example.com/etcd", True),
        ("HTTP://u:p@mirror.example.com:80/etcd", True),
        ("http://127.0.0.1:8080/etcd", False),
        ("http://127.3.4.5/etcd", False),
        ("http://[::1]:8080/etcd", False),
        ("http://localhost/etcd", False),
        ("http://u:p@localhost:81/etcd", False),
        ("https://192.0.2.1/etcd", False),
        ("file:///srv/etcd", False),
        ("/srv/etcd", False),
    ],
)
def test_plain_http_needs_a_pin(url: str, needs: bool) -> None:
    assert needs_release_pin(url) is needs


def test_release_pins(tmp_path: Path) -> None:
    assert release_pin_problem("3.5.17/amd64", "ab" * 32) is None
    assert "VERSION/ARCH" in (release_pin_problem("3.5.17", "ab" * 32) or "")
    assert "unknown architecture" in (release_pin_problem("3.5.17/x86_64", "ab" * 32) or "")
    assert "leading v" in (release_pin_problem("v3.5.17/amd64", "ab" * 32) or "")
    assert "64 hex digits" in (release_pin_problem("3.5.17/amd64", "ab") or "")
    base = make_inventory(tmp_path).path.read_text()
    pinned = base.replace(
        'etcd_version = "3.5.30"\n',
        'etcd_version = "3.5.30"\nrelease_url = "http://192.0.2.1/etcd"\n'
        f'release_sha256 = {{ "3.5.30/arm64" = "{"CD" * 32}" }}\n',
    )
    path = tmp_path / "pinned.toml"
    path.write_text(pinned)
    assert load_inventory(path).cluster.release_pin("3.5.30", "arm64") == "cd" * 32
    path.write_text(pinned.replace("3.5.30/arm64", "3.5.31/arm64"))
    with pytest.raises(InventoryError, match=r"cluster\.release_url: .* is plain http://"):
        load_inventory(path)
