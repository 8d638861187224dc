"""Changes made on one host: each a pure script builder plus a call that runs it.

Files travel as one tar stream per host on stdin (modes and owners inside the archive),
so secrets never appear on a command line and a phase costs one SSH round trip.
"""

from __future__ import annotations

import io
import shlex
import tarfile
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from orchestrator.inventory import Inventory
from orchestrator.lock import LOCK_PATH
from orchestrator.plan import (
    BACKUP_TIMER_PATH,
    BACKUP_UNIT_PATH,
    HOST_BACKUP_DIR,
    UNIT_PATH,
    DesiredFile,
    desired_dirs,
)
from orchestrator.release import Release, release_bytes

if TYPE_CHECKING:
    from orchestrator.transport import HostConnection

q = shlex.quote


def _prepare_lines(inv: Inventory) -> list[str]:
    c = inv.cluster
    lines = [
        "getent group etcd >/dev/null || groupadd --system etcd",
        "id -u etcd >/dev/null 2>&1 || useradd --system --gid etcd --no-create-home "
        f"--home-dir {q(c.data_dir)} --shell /usr/sbin/nologin etcd",
    ]
    for path, (mode, owner, group) in desired_dirs(inv).items():
        lines.append(f"install -d -m {mode:04o} -o {owner} -g {group} {q(path)}")
    return lines


def files_tar(files: Iterable[DesiredFile]) -> bytes:
    """A tar archive of `files` (paths relative to /) carrying their modes and owners."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for f in files:
            info = tarfile.TarInfo(f.path.lstrip("/"))
            info.size = len(f.content)
            info.mode = f.mode
            info.uname, info.gname = f.owner, f.group
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(f.content))
    return buffer.getvalue()


# Writes the files of the tar on stdin with the modes and owners the archive carries.
EXTRACT_FILES = "tar -x -f - -C / --same-owner --same-permissions --no-overwrite-dir"


def write_files_script(daemon_reload: bool) -> str:
    return "\n".join(
        ["set -e", EXTRACT_FILES, *(["systemctl daemon-reload"] if daemon_reload else [])]
    )


def _binary_lines(inv: Inventory, release: Release) -> list[str]:
    """Unpack the binaries from the release tarball arriving on stdin, straight next to
    their place, and swap them in atomically; the previous ones stay as `<name>.prev`
    (hard links) for rollback."""
    d = q(inv.cluster.install_dir)
    top = q(release.top_dir)
    names = " ".join(release.binaries)
    members = " ".join(f"{top}/{b}" for b in release.binaries)
    return [
        f"install -d -m 0755 {d}",
        f"tmp=$(mktemp -d {d}/.etcd-deploy.XXXXXX)",
        "trap 'rm -rf \"$tmp\"' EXIT",
        f'tar -x -z -f - -C "$tmp" --no-same-owner --strip-components=1 {members}',
        "cat >/dev/null",  # whatever tar leaves of the stream after its end marker
        f"for b in {names}; do",
        f'  if [ -f {d}/"$b" ]; then ln -f {d}/"$b" {d}/"$b".prev; fi',
        '  chmod 0755 "$tmp"/"$b"',
        f'  mv -f "$tmp"/"$b" {d}/"$b"',
        "done",
        *([f"rm -f {d}/etcdutl"] if "etcdutl" not in release.binaries else []),
        f"{d}/etcd --version | head -n 1",
    ]


def setup_script(
    inv: Inventory, *, prepare: bool, files_size: int, release: Release | None, reload: bool
) -> str:
    """One command for a host's whole install (or any part of it): the etcd user and
    directories, then the files of the tar on stdin (its first `files_size` bytes), then the
    binaries from the release tarball that follows it."""
    lines = ["set -e", *(_prepare_lines(inv) if prepare else [])]
    if release is None:
        lines.append(EXTRACT_FILES)
    else:
        lines.append(f"head -c {files_size} | {EXTRACT_FILES}")
        lines += _binary_lines(inv, release)
    if reload:
        lines.append("systemctl daemon-reload")
    return "\n".join(lines)


def setup_host(
    conn: HostConnection,
    inv: Inventory,
    files: list[DesiredFile],
    *,
    prepare: bool,
    release: Release | None,
) -> None:
    """Run `setup_script` with `files` as a tar on stdin, the release tarball after it."""
    archive = files_tar(files)
    reload = any(f.path.startswith("/etc/systemd/system/") for f in files)
    script = setup_script(
        inv, prepare=prepare, files_size=len(archive), release=release, reload=reload
    )
    conn.run(script, stdin=[archive, release_bytes(release)] if release else [archive])


def teardown_script(inv: Inventory, *, wipe_data: bool) -> str:
    """Stop etcd and remove what etcd-deploy installed; the data dir (and the etcd user that
    owns it) only with `wipe_data`. Ends by letting go of the run lock."""
    c = inv.cluster
    binaries = " ".join(
        f"{q(c.install_dir)}/{b} {q(c.install_dir)}/{b}.prev"
        for b in ("etcd", "etcdctl", "etcdutl", "etcdctl.sh", "etcd-backup.sh")
    )
    lines = [
        "systemctl disable --now etcd.service etcd-backup.timer >/dev/null 2>&1 || true",
        f"rm -f {UNIT_PATH} {BACKUP_UNIT_PATH} {BACKUP_TIMER_PATH}",
        "systemctl daemon-reload",
        "systemctl reset-failed etcd.service >/dev/null 2>&1 || true",
        f"rm -rf {q(c.config_dir)}",
        f"rm -f {binaries}",
        f"rmdir {q(c.install_dir)} 2>/dev/null || true",
    ]
    if wipe_data:
        lines += [
            f"rm -rf {q(c.data_dir)} {HOST_BACKUP_DIR}",
            "userdel etcd >/dev/null 2>&1 || true",
            "groupdel etcd >/dev/null 2>&1 || true",
        ]
    return "\n".join([*lines, f"rm -f {LOCK_PATH}"])


def journal_tail(conn: HostConnection, lines: int = 12) -> str:
    """The member's last journal lines, without etcd's list of the variables it read."""
    result = conn.run(
        "journalctl -u etcd.service -n 200 --no-pager -o cat | "
        f"grep -v 'recognized and used environment variable' | tail -n {lines}",
        check=False,
        quiet=True,
    )
    return result.stdout.strip()


def apply_files(conn: HostConnection, files: list[DesiredFile]) -> None:
    """Write `files` in one command; systemd reloads its units when one of them changed."""
    reload = any(f.path.startswith("/etc/systemd/system/") for f in files)
    conn.run(write_files_script(reload), stdin=files_tar(files))
