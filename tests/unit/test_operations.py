"""Host operations: script builders (checked with `sh -n`), the files tar stream, and - when
running as root - the install and write scripts run for real against tmp_path."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.adapters.release import Release, top_dir_name
from orchestrator.core.host_plan import DesiredFile
from orchestrator.core.inventory import Inventory
from orchestrator.core.ownership import STAGED_SUFFIX
from orchestrator.engine.operations import (
    EXTRACT_FILES,
    files_tar,
    setup_script,
    write_files_script,
)
from tests.unit.helpers import make_inventory, wanted_files

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the scripts set root ownership (install -o root, tar --same-owner)"
)


def syntax_check(script: str) -> None:
    result = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


def release(
    version: str, binaries: tuple[str, ...], path: Path = Path("/unused.tar.gz")
) -> Release:
    return Release(
        version=version,
        arch="amd64",
        path=path,
        sha256="0" * 64,
        size=0,
        top_dir=top_dir_name(version, "amd64"),
        binaries=binaries,
    )


R35 = release("3.5.17", ("etcd", "etcdctl", "etcdutl"))
R34 = release("3.4.27", ("etcd", "etcdctl"))


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return make_inventory(tmp_path)


# --------------------------------------------------------------------------- prepare


def test_setup_script_prepares_user_and_dirs(inv: Inventory) -> None:
    script = setup_script(inv, prepare=True, files=[], files_size=0, release=None, reload=False)
    lines = script.splitlines()
    assert lines[0] == "set -e"
    assert "getent group etcd >/dev/null || groupadd --system etcd" in lines
    assert (
        "id -u etcd >/dev/null 2>&1 || useradd --system --gid etcd --no-create-home "
        "--home-dir /var/lib/etcd --shell /usr/sbin/nologin etcd"
    ) in lines
    assert [line for line in lines if line.startswith("install -d")] == [
        "install -d -m 0755 -o root -g root /opt/bin",
        "install -d -m 0755 -o root -g root /etc/etcd",
        "install -d -m 0700 -o etcd -g etcd /etc/etcd/pki",
        "install -d -m 0700 -o etcd -g etcd /var/lib/etcd",
    ]
    # The user exists before any folder is given to it.
    assert script.index("useradd") < script.index("-o etcd")
    syntax_check(script)


def test_setup_script_prepare_follows_configured_dirs(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, data_dir="/srv/etcd-data", config_dir="/srv/etcd-conf")
    script = setup_script(inv, prepare=True, files=[], files_size=0, release=None, reload=False)
    assert "--home-dir /srv/etcd-data " in script
    assert "install -d -m 0700 -o etcd -g etcd /srv/etcd-conf/pki\n" in script
    assert script.endswith("install -d -m 0700 -o etcd -g etcd /srv/etcd-data\n" + EXTRACT_FILES)


# --------------------------------------------------------------------------- files tar


def test_files_tar_entries(inv: Inventory) -> None:
    files = wanted_files(inv)
    with tarfile.open(fileobj=io.BytesIO(files_tar(files))) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [f.path.lstrip("/") + STAGED_SUFFIX for f in files]
        for m, f in zip(members, files, strict=True):
            assert not m.name.startswith("/")
            assert m.isfile()
            assert (m.mode, m.uname, m.gname) == (f.mode, f.owner, f.group), m.name
            assert m.size == len(f.content)
            extracted = tar.extractfile(m)
            assert extracted is not None and extracted.read() == f.content


def test_files_tar_keeps_binary_content_and_empty_files() -> None:
    files = [
        DesiredFile("/etc/etcd/empty", b"", 0o640, "root", "etcd", "env"),
        DesiredFile("/etc/etcd/blob", bytes(range(256)) * 3, 0o600, "etcd", "etcd", "key"),
    ]
    with tarfile.open(fileobj=io.BytesIO(files_tar(files))) as tar:
        contents = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    assert contents == {
        "etc/etcd/empty" + STAGED_SUFFIX: b"",
        "etc/etcd/blob" + STAGED_SUFFIX: bytes(range(256)) * 3,
    }


def test_files_tar_of_nothing_is_a_valid_empty_archive() -> None:
    with tarfile.open(fileobj=io.BytesIO(files_tar([]))) as tar:
        assert tar.getmembers() == []


def wanted_files_of_tmp() -> list[DesiredFile]:
    return [DesiredFile("/etc/etcd/etcd.env", b"x\n", 0o640, "root", "etcd", "env")]


@pytest.mark.parametrize("reload", [True, False])
def test_write_files_script(reload: bool) -> None:
    script = write_files_script(wanted_files_of_tmp(), reload)
    assert "tar -x -f - -C / --same-owner --same-permissions" in script
    assert ("systemctl daemon-reload" in script) is reload
    syntax_check(script)


@needs_root
def test_files_tar_extracts_with_modes(tmp_path: Path, inv: Inventory) -> None:
    """The write script's tar options, aimed at tmp_path instead of /."""
    files = [f for f in wanted_files(inv) if f.owner == "root" and f.group == "root"]
    files.append(DesiredFile("/etc/etcd/pki/x.key", b"secret\n", 0o600, "root", "root", "key"))
    script = write_files_script(files, False, root=str(tmp_path))
    subprocess.run(["sh", "-c", script], input=files_tar(files), check=True, capture_output=True)
    for f in files:
        path = tmp_path / f.path.lstrip("/")
        assert path.read_bytes() == f.content
        st = path.stat()
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (f.mode, 0, 0), f.path
        assert not Path(str(path) + STAGED_SUFFIX).exists()


def cut_stream_leaves_old_files(tmp_path: Path, files: list[DesiredFile], keep: int) -> None:
    """Write `files` once, then send new contents cut after `keep` bytes: every target
    keeps its old, complete content, and the run fails."""
    script = write_files_script(files, False, root=str(tmp_path))
    subprocess.run(["sh", "-c", script], input=files_tar(files), check=True, capture_output=True)
    new = [replace(f, content=f.content + b"# new\n") for f in files]
    cut = files_tar(new)[:keep]
    script = write_files_script(new, False, root=str(tmp_path))
    result = subprocess.run(["sh", "-c", script], input=cut, capture_output=True)
    assert result.returncode != 0
    for f in files:
        assert (tmp_path / f.path.lstrip("/")).read_bytes() == f.content, f.path


@needs_root
@pytest.mark.parametrize("keep", [0, 100, 512, 1024, 3000, 6000])
def test_a_cut_stream_changes_no_file(tmp_path: Path, inv: Inventory, keep: int) -> None:
    """Cut inside a header, inside a file, at a member boundary: nothing is replaced."""
    files = [f for f in wanted_files(inv) if f.owner == "root" and f.group == "root"]
    files.append(DesiredFile("/etc/etcd/pki/x.crt", b"cert\n" * 300, 0o644, "root", "root", "cert"))
    files.append(DesiredFile("/etc/etcd/pki/x.key", b"key\n" * 300, 0o600, "root", "root", "key"))
    cut_stream_leaves_old_files(tmp_path, files, keep)


@needs_root
def test_a_symlink_at_a_target_is_replaced_not_written_through(
    tmp_path: Path, inv: Inventory
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    f = DesiredFile("/etc/etcd/etcd.env", b"ETCD_NAME=x\n", 0o640, "root", "root", "env")
    target = tmp_path / "etc/etcd/etcd.env"
    target.parent.mkdir(parents=True)
    target.symlink_to(victim)
    script = write_files_script([f], False, root=str(tmp_path))
    subprocess.run(["sh", "-c", script], input=files_tar([f]), check=True, capture_output=True)
    assert victim.read_bytes() == b"precious\n"
    assert not target.is_symlink() and target.read_bytes() == b"ETCD_NAME=x\n"


# --------------------------------------------------------------------------- install


def test_setup_script_keeps_a_rollback_copy(inv: Inventory) -> None:
    script = setup_script(inv, prepare=False, files=[], files_size=10240, release=R35, reload=False)
    assert "head -c 10240 | tar -x -f - -C /" in script
    assert "tmp=$(mktemp -d /opt/bin/.etcd-deploy.XXXXXX)" in script  # same file system
    assert "--strip-components=1 etcd-v3.5.17-linux-amd64/etcd" in script
    assert "for b in etcd etcdctl etcdutl; do" in script
    assert 'ln -f /opt/bin/"$b" /opt/bin/"$b".prev' in script
    assert 'mv -f "$tmp"/"$b" /opt/bin/"$b"' in script
    assert "rm -f /opt/bin/etcdutl" not in script
    assert script.endswith("/opt/bin/etcd --version | head -n 1")
    syntax_check(script)


def test_setup_script_removes_etcdutl_for_3_4(inv: Inventory) -> None:
    script = setup_script(inv, prepare=False, files=[], files_size=0, release=R34, reload=False)
    assert "for b in etcd etcdctl; do" in script
    assert "rm -f /opt/bin/etcdutl" in script
    syntax_check(script)


def test_setup_script_follows_install_dir(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, install_dir="/usr/local/etcd-bin")
    script = setup_script(inv, prepare=False, files=[], files_size=0, release=R35, reload=False)
    assert "install -d -m 0755 /usr/local/etcd-bin" in script
    assert "/opt/bin" not in script


def fake_release(tmp_path: Path, version: str, binaries: tuple[str, ...]) -> Release:
    """A tarball laid out like the official one, whose binaries are sh scripts."""
    top = top_dir_name(version, "amd64")
    path = tmp_path / f"{top}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in (*binaries, "README.md"):
            body = f"#!/bin/sh\necho '{name} Version: {version}'\n".encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(body), 0o755
            tar.addfile(info, io.BytesIO(body))
    return release(version, binaries, path)


@needs_root
def test_setup_script_for_real(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    inv = make_inventory(tmp_path)  # a folder in /tmp is refused by the loader: set it after
    inv = replace(inv, cluster=replace(inv.cluster, install_dir=str(bin_dir)))

    marker = tmp_path / "etc" / "marker"

    def install(rel: Release) -> str:
        files = [DesiredFile(str(marker), b"x", 0o600, "root", "root", "test")]
        archive = files_tar(files)
        script = setup_script(
            inv, prepare=False, files=files, files_size=len(archive), release=rel, reload=False
        )
        result = subprocess.run(
            ["sh", "-c", script],
            input=archive + rel.path.read_bytes(),
            capture_output=True,
            check=True,
        )
        assert marker.read_bytes() == b"x"  # the files before the tarball, then the binaries
        return result.stdout.decode()

    first = fake_release(tmp_path, "3.5.17", ("etcd", "etcdctl", "etcdutl"))
    assert install(first) == "etcd Version: 3.5.17\n"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["etcd", "etcdctl", "etcdutl"]
    assert all(p.stat().st_mode & 0o777 == 0o755 for p in bin_dir.iterdir())

    second = fake_release(tmp_path, "3.4.27", ("etcd", "etcdctl"))
    assert install(second) == "etcd Version: 3.4.27\n"
    names = sorted(p.name for p in bin_dir.iterdir())
    assert names == ["etcd", "etcd.prev", "etcdctl", "etcdctl.prev"]  # etcdutl gone
    assert "3.5.17" in (bin_dir / "etcd.prev").read_text()
    assert "3.4.27" in (bin_dir / "etcd").read_text()


def test_setup_script_prepares_then_writes_then_installs(tmp_path: Path) -> None:

    inv = make_inventory(tmp_path)
    release = Release(
        "3.5.17",
        "amd64",
        tmp_path / "x.tar.gz",
        "ab" * 32,
        1,
        "etcd-v3.5.17-linux-amd64",
        ("etcd", "etcdctl", "etcdutl"),
    )
    script = setup_script(inv, prepare=True, files=[], files_size=512, release=release, reload=True)
    order = [
        script.index(s)
        for s in (
            "useradd",
            "head -c 512 | tar -x -f - -C /",
            'tar -x -z -f - -C "$tmp"',
            "cat >/dev/null",
            "systemctl daemon-reload",
        )
    ]
    assert order == sorted(order)
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    bare = setup_script(inv, prepare=False, files=[], files_size=512, release=None, reload=False)
    assert "useradd" not in bare and "etcd --version" not in bare and "daemon-reload" not in bare
