"""adapters.local_tools: etcd's snapshot tool extracted from the cached release tarball.

Fake releases (tiny sh scripts) cover the logic; the real mirror tarballs, when present,
run the real etcdutl (3.5.1) and etcdctl (3.4.23) on a real snapshot.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

import orchestrator.adapters.local_tools as local_tools
from orchestrator.adapters.local_tools import local_snapshot_status, snapshot_tool
from orchestrator.adapters.release import Release, top_dir_name, verify_layout
from orchestrator.adapters.snapshot import SnapshotStatus, verify_integrity
from orchestrator.core.errors import PreflightError
from tests.lab.mirror import default_mirror_dir, tarball_name, write_release

REAL_SNAPSHOT = Path(__file__).parent / "data" / "etcd-3.5.1-snapshot.db"
REAL_STATUS = SnapshotStatus(hash=1250086263, revision=6, total_keys=11, total_size=20480)
STATUS_JSON = '{"hash":7,"revision":8,"totalKey":9,"totalSize":4096}'

# Fake tools: print fixed JSON for `snapshot status FILE -w json`, and the env they saw.
FAKE_UTL = f"""#!/bin/sh
[ "$1 $2 $4 $5" = "snapshot status -w json" ] || {{ echo "bad args: $*" >&2; exit 2; }}
[ -f "$3" ] || {{ echo "Error: open $3: no such file or directory" >&2; exit 1; }}
echo '{STATUS_JSON}'
""".encode()
FAKE_CTL = b"""#!/bin/sh
[ "$ETCDCTL_API" = 3 ] || { echo "ETCDCTL_API is '$ETCDCTL_API'" >&2; exit 3; }
echo '{"hash":1,"revision":2,"totalKey":3,"totalSize":4}'
"""
ETCD = (b"#!/bin/sh\necho etcd\n", 0o755)


@pytest.fixture(autouse=True)
def linux_amd64(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake releases are amd64: make this machine one (real-binary tests skip otherwise)."""
    monkeypatch.setattr(local_tools.sys, "platform", "linux")
    monkeypatch.setattr(local_tools.platform, "machine", lambda: "x86_64")


def fake_release(root: Path, version: str, files: dict[str, tuple[bytes, int]]) -> Release:
    path = write_release(root, version, files)
    top = top_dir_name(version, "amd64")
    data = path.read_bytes()
    return Release(
        version,
        "amd64",
        path,
        hashlib.sha256(data).hexdigest(),
        len(data),
        top,
        verify_layout(path, top),
    )


def release_35(root: Path, utl: bytes = FAKE_UTL) -> Release:
    return fake_release(root, "3.5.9", {"etcd": ETCD, "etcdctl": ETCD, "etcdutl": (utl, 0o755)})


def test_extracts_etcdutl_once(tmp_path: Path) -> None:
    release = release_35(tmp_path / "src")
    cache = tmp_path / "cache"
    tool = snapshot_tool(release, cache)
    binary = cache / "tools" / "v3.5.9" / "etcdutl"
    assert tool == [str(binary)]
    assert binary.read_bytes() == FAKE_UTL
    assert os.stat(binary).st_mode & 0o777 == 0o755
    assert (cache / "tools" / "v3.5.9" / "etcdutl.source").read_text().strip() == release.sha256
    inode = binary.stat().st_ino
    assert snapshot_tool(release, cache) == tool
    assert binary.stat().st_ino == inode  # not extracted again
    assert sorted(p.name for p in binary.parent.iterdir()) == ["etcdutl", "etcdutl.source"]


def test_other_tarball_of_the_version_extracts_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    snapshot_tool(release_35(tmp_path / "a"), cache)
    other = FAKE_UTL + b"# rebuilt\n"
    tool = snapshot_tool(release_35(tmp_path / "b", other), cache)
    assert tool is not None
    assert Path(tool[0]).read_bytes() == other


def test_damaged_extraction_is_redone(tmp_path: Path) -> None:
    release = release_35(tmp_path / "src")
    cache = tmp_path / "cache"
    snapshot_tool(release, cache)
    (cache / "tools" / "v3.5.9" / "etcdutl.source").unlink()
    (cache / "tools" / "v3.5.9" / "etcdutl").write_bytes(b"garbage")
    tool = snapshot_tool(release, cache)
    assert tool is not None
    assert Path(tool[0]).read_bytes() == FAKE_UTL


def test_default_cache_is_the_release_cache(tmp_path: Path) -> None:
    release = release_35(tmp_path / "releases")
    assert snapshot_tool(release) == [str(tmp_path / "releases" / "tools" / "v3.5.9" / "etcdutl")]


def test_3_4_uses_etcdctl_with_api_3(tmp_path: Path) -> None:
    release = fake_release(tmp_path / "src", "3.4.30", {"etcd": ETCD, "etcdctl": (FAKE_CTL, 0o755)})
    tool = snapshot_tool(release, tmp_path / "cache")
    binary = tmp_path / "cache" / "tools" / "v3.4.30" / "etcdctl"
    assert tool == ["env", "ETCDCTL_API=3", str(binary)]
    assert local_snapshot_status(tool, REAL_SNAPSHOT) == SnapshotStatus(1, 2, 3, 4)


@pytest.mark.parametrize(
    ("platform_name", "machine"),
    [("darwin", "x86_64"), ("win32", "AMD64"), ("linux", "aarch64"), ("linux", "riscv64")],
)
def test_none_when_this_machine_cannot_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform_name: str, machine: str
) -> None:
    monkeypatch.setattr(local_tools.sys, "platform", platform_name)
    monkeypatch.setattr(local_tools.platform, "machine", lambda: machine)
    assert snapshot_tool(release_35(tmp_path / "src"), tmp_path / "cache") is None
    assert not (tmp_path / "cache").exists()


def test_arm64_release_on_arm64(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_tools.platform, "machine", lambda: "aarch64")
    path = write_release(tmp_path / "src", "3.5.9", {"etcd": ETCD, "etcdctl": ETCD}, arch="arm64")
    top = top_dir_name("3.5.9", "arm64")
    release = Release("3.5.9", "arm64", path, "0" * 64, 1, top, verify_layout(path, top))
    assert snapshot_tool(release, tmp_path / "cache") is not None


def test_unreadable_tarball(tmp_path: Path) -> None:
    release = release_35(tmp_path / "src")
    release.path.write_bytes(b"not a tarball")
    with pytest.raises(PreflightError, match=r"cannot read .*\.tar\.gz"):
        snapshot_tool(release, tmp_path / "cache")
    assert list((tmp_path / "cache" / "tools" / "v3.5.9").iterdir()) == []


def test_tool_missing_from_tarball(tmp_path: Path) -> None:
    release = release_35(tmp_path / "src")
    elsewhere = Release(
        release.version,
        "amd64",
        release.path,
        release.sha256,
        release.size,
        "other-top",
        release.binaries,
    )
    with pytest.raises(PreflightError, match="has no regular file other-top/etcdutl"):
        snapshot_tool(elsewhere, tmp_path / "cache")


def test_cache_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(PreflightError, match="cannot create"):
        snapshot_tool(release_35(tmp_path / "src"), blocker)


# ------------------------------------------------------------------------------ status


def test_status_parses_the_tool_output(tmp_path: Path) -> None:
    tool = snapshot_tool(release_35(tmp_path / "src"), tmp_path / "cache")
    assert tool is not None
    assert local_snapshot_status(tool, REAL_SNAPSHOT) == SnapshotStatus(7, 8, 9, 4096)


def test_status_failure_carries_stderr(tmp_path: Path) -> None:
    tool = snapshot_tool(release_35(tmp_path / "src"), tmp_path / "cache")
    assert tool is not None
    with pytest.raises(PreflightError) as exc:
        local_snapshot_status(tool, tmp_path / "missing.db")
    msg = str(exc.value)
    assert msg.startswith(f"etcdutl snapshot status {tmp_path / 'missing.db'} failed (exit 1): ")
    assert "Error: open" in msg and "no such file or directory" in msg
    assert "\n" not in msg


def test_status_tool_not_runnable(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match="cannot run"):
        local_snapshot_status([str(tmp_path / "nope")], REAL_SNAPSHOT)


def test_status_garbage_output(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o755)
    with pytest.raises(PreflightError, match="unexpected snapshot status output"):
        local_snapshot_status([str(script)], REAL_SNAPSHOT)


def test_status_timeout(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\nexec sleep 5\n")
    script.chmod(0o755)
    with pytest.raises(PreflightError, match=r"did not finish within 0\.2s"):
        local_snapshot_status([str(script)], REAL_SNAPSHOT, timeout=0.2)


# ------------------------------------------------------------------------------ real binaries

MIRROR = default_mirror_dir()
NATIVE = sys.platform.startswith("linux") and os.uname().machine == "x86_64"


def real_release(version: str) -> Release:
    path = MIRROR / f"v{version}" / tarball_name(version)
    if not NATIVE or not path.is_file():
        pytest.skip(f"no etcd {version} mirror tarball at {path} (or not linux-amd64)")
    data = path.read_bytes()
    top = top_dir_name(version, "amd64")
    return Release(
        version,
        "amd64",
        path,
        hashlib.sha256(data).hexdigest(),
        len(data),
        top,
        verify_layout(path, top),
    )


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tools cache for the module: each real extraction reads a 20 MB tarball."""
    return tmp_path_factory.mktemp("real-tools")


@pytest.mark.parametrize(("version", "name"), [("3.5.1", "etcdutl"), ("3.4.23", "etcdctl")])
def test_real_tool_status_of_a_real_snapshot(real_cache: Path, version: str, name: str) -> None:
    tool = snapshot_tool(real_release(version), real_cache)
    assert tool is not None
    assert Path(tool[-1]).name == name
    assert local_snapshot_status(tool, REAL_SNAPSHOT) == REAL_STATUS


def test_real_tool_rejects_a_non_database(tmp_path: Path, real_cache: Path) -> None:
    tool = snapshot_tool(real_release("3.5.1"), real_cache)
    assert tool is not None
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"hello" * 1000)
    with pytest.raises(
        PreflightError,
        match=r"etcdutl snapshot status .*junk\.db failed \(exit 1\): Error: ",
    ):
        local_snapshot_status(tool, junk)


def test_real_status_does_not_check_the_hash(tmp_path: Path, real_cache: Path) -> None:
    """Why verify_integrity exists: `snapshot status` passes a corrupt snapshot."""
    tool = snapshot_tool(real_release("3.5.1"), real_cache)
    assert tool is not None
    data = bytearray(REAL_SNAPSHOT.read_bytes())
    data[-1] ^= 0xFF
    bad = tmp_path / "bad.db"
    bad.write_bytes(bytes(data))
    assert local_snapshot_status(tool, bad) == REAL_STATUS
    with pytest.raises(PreflightError, match="integrity hash mismatch"):
        verify_integrity(bad)
