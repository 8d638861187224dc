"""Changes made on one host: each a pure script builder plus a call that runs it.

Files travel as one tar stream per host on stdin (modes and owners inside the archive),
so secrets never appear on a command line and a phase costs one SSH round trip. Nothing
is written in place: each file lands next to its target as `<path>.etcd-deploy-new`, all
of them are checked against their sha256 and flushed to disk, and only then renamed over
their targets, one right after the other (a cert and its key within microseconds). A cut
stream leaves every old file as it was.
"""

from __future__ import annotations

import io
import shlex
import tarfile
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from orchestrator.adapters.release import Release, release_bytes
from orchestrator.core.etcd_unit import DAEMON_RELOAD, DISABLE_ALL, RESET_FAILED, journal
from orchestrator.core.host_lock import remove_script
from orchestrator.core.host_paths import (
    BACKUP_SCRIPT_NAME,
    BACKUP_TIMER_PATH,
    BACKUP_UNIT_PATH,
    HOST_BACKUP_DIR,
    UNIT_PATH,
    WRAPPER_NAME,
    config_path,
    is_unit_file,
    pki_dir,
)
from orchestrator.core.host_plan import DesiredFile, desired_dirs
from orchestrator.core.inventory import Inventory
from orchestrator.core.ownership import (
    ASIDE_PREFIX,
    CONFIG_FILES,
    MARKER_NAME,
    RESTORE_PREFIX,
    STAGED_SUFFIX,
    Marker,
)
from orchestrator.core.render import pki_paths

if TYPE_CHECKING:
    from orchestrator.adapters.transport import HostConnection

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


def staged_path(path: str) -> str:
    """Where a file lands before it is verified and renamed over `path`."""
    return path + STAGED_SUFFIX


def files_tar(files: Iterable[DesiredFile]) -> bytes:
    """A tar archive of `files` at their staged paths (relative to /), with modes and
    owners."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for f in files:
            info = tarfile.TarInfo(staged_path(f.path).lstrip("/"))
            info.size = len(f.content)
            info.mode = f.mode
            info.uname, info.gname = f.owner, f.group
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(f.content))
    return buffer.getvalue()


# Writes the files of the tar on stdin with the modes and owners the archive carries.
EXTRACT_FILES = "tar -x -f - -C / --same-owner --same-permissions --no-overwrite-dir"


def place_files_lines(files: Iterable[DesiredFile], root: str = "/") -> list[str]:
    """After EXTRACT_FILES: check every staged file's sha256, flush them to disk, then
    rename each over its target (a rename replaces a symlink, never writes through it).
    `root` is "/" on a host (tests aim it elsewhere)."""
    files = list(files)
    if not files:
        return []
    base = root.rstrip("/")
    sums = "\n".join(f"{f.sha256}  {base}{staged_path(f.path)}" for f in files)
    staged = " ".join(q(base + staged_path(f.path)) for f in files)
    return [
        f"printf '%s\\n' {q(sums)} | sha256sum -c --quiet --strict -",
        f"sync {staged}",
        *(f"mv -f -T {q(base + staged_path(f.path))} {q(base + f.path)}" for f in files),
    ]


def write_files_script(files: Iterable[DesiredFile], daemon_reload: bool, root: str = "/") -> str:
    files = list(files)
    extract = EXTRACT_FILES.replace("-C /", f"-C {q(root)}") if root != "/" else EXTRACT_FILES
    return "\n".join(
        [
            "set -e",
            extract,
            *place_files_lines(files, root),
            *([DAEMON_RELOAD] if daemon_reload else []),
        ]
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
    inv: Inventory,
    *,
    prepare: bool,
    files: list[DesiredFile],
    files_size: int,
    release: Release | None,
    reload: bool,
) -> str:
    """One command for a host's whole install (or any part of it): the etcd user and
    directories, then `files` from the tar on stdin (its first `files_size` bytes), put in
    place once all arrived whole, then the binaries from the release tarball that follows."""
    lines = ["set -e", *(_prepare_lines(inv) if prepare else [])]
    if release is None:
        lines.append(EXTRACT_FILES)
        lines += place_files_lines(files)
    else:
        lines.append(f"head -c {files_size} | {EXTRACT_FILES}")
        lines += place_files_lines(files)
        lines += _binary_lines(inv, release)
    if reload:
        lines.append(DAEMON_RELOAD)
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
    reload = any(is_unit_file(f.path) for f in files)
    script = setup_script(
        inv, prepare=prepare, files=files, files_size=len(archive), release=release, reload=reload
    )
    conn.run(script, stdin=[archive, release_bytes(release)] if release else [archive])


def marker_lines(folder: str, marker: Marker) -> list[str]:
    """Write `folder`'s marker as the install does (root, 0644), after a script re-made it."""
    path = q(f"{folder}/{MARKER_NAME}")
    return [
        f"printf '%s' {q(marker.render())} > {path}",
        f"chown root:root {path}",
        f"chmod 0644 {path}",
    ]


def aside_lines(folder: str, suffix: str) -> list[str]:
    """Move `folder` aside, never deleting it: renamed to `<folder>.<suffix>`, or, for a
    mount point (which cannot be renamed), its entries moved into
    `<folder>/.etcd-deploy-aside-<suffix>/`. Prints where they went."""
    d = q(folder)
    inside = q(f"{folder}/{ASIDE_PREFIX}{suffix}")
    beside = q(f"{folder}.{suffix}")
    return [
        f"if mountpoint -q {d}; then",
        f"  mkdir -m 0700 {inside}",
        f"  find {d} -mindepth 1 -maxdepth 1 ! -name lost+found ! -name {q(ASIDE_PREFIX + '*')} "
        f"! -name {q(RESTORE_PREFIX + '*')} -exec mv -t {inside} {{}} +",
        f"  echo {inside}",
        f"elif [ -e {d} ]; then mv -T {d} {beside}; echo {beside}; fi",
    ]


def _remove_marked_lines(
    folder: str, marker: Marker, *, force: bool, also: list[str] | None = None
) -> list[str]:
    """Empty `folder` and remove it, only when it carries this cluster's marker (or with
    `force`), and run `also` then; never through a symlink; a mount point stays, emptied
    but for lost+found and what was moved aside in it. Says what it did."""
    d, m = q(folder), q(f"{folder}/{MARKER_NAME}")
    if marker.cluster_id:
        ours = f"[ ! -L {m} ] && grep -qxF {q(marker.render().strip())} {m} 2>/dev/null"
    else:  # a state dir from before the ids: the cluster's name is what we can check
        prefix = f"etcd-deploy cluster={marker.cluster} id="
        ours = f"[ ! -L {m} ] && grep -q ^{q(prefix)} {m} 2>/dev/null"
    check = "true" if force else ours
    keep = f"! -name lost+found ! -name {q(ASIDE_PREFIX + '*')}"
    return [
        f"if [ -L {d} ]; then echo {q(f'kept {folder}: it is a symlink')}",
        f"elif [ ! -e {d} ]; then :",
        f"elif {check}; then",
        f"  if mountpoint -q {d}; then",
        f"    find {d} -mindepth 1 -maxdepth 1 {keep} -exec rm -rf {{}} +",
        f"  else rm -rf {d}; fi",
        *(f"  {line}" for line in also or []),
        f"  echo {q(f'removed {folder}')}",
        "else",
        f"  echo {q(f'kept {folder}: it carries no marker of this cluster')}",
        "fi",
    ]


def teardown_script(inv: Inventory, *, wipe_data: bool, marker: Marker, force: bool = False) -> str:
    """Stop etcd and remove what etcd-deploy installed: its own files by name (never the
    config dir's other files); the data dir (and the etcd user that owns it) only with
    `wipe_data` and only when it carries this cluster's marker (`force`: whatever it holds).
    Ends by letting go of the run lock."""
    c = inv.cluster
    binaries = " ".join(
        f"{q(c.install_dir)}/{b} {q(c.install_dir)}/{b}.prev"
        for b in ("etcd", "etcdctl", "etcdutl", WRAPPER_NAME, BACKUP_SCRIPT_NAME)
    )
    ours = [*pki_paths(inv).values(), *(config_path(inv, n) for n in CONFIG_FILES)]
    config = " ".join(q(p) for p in ours)
    pki = q(pki_dir(inv))
    lines = [
        DISABLE_ALL,
        f"rm -f {UNIT_PATH} {BACKUP_UNIT_PATH} {BACKUP_TIMER_PATH}",
        DAEMON_RELOAD,
        RESET_FAILED,
        f"rm -f {config} {q(c.config_dir)}/*{STAGED_SUFFIX} {pki}/*{STAGED_SUFFIX}",
        f"rmdir {pki} {q(c.config_dir)} 2>/dev/null || true",
        f"rm -f {binaries}",
        f"rmdir {q(c.install_dir)} 2>/dev/null || true",
    ]
    if wipe_data:
        lines += [
            # The scheduled backups go with the data they are of, and so does its user.
            *_remove_marked_lines(
                c.data_dir,
                marker,
                force=force,
                also=[
                    f"rm -rf {HOST_BACKUP_DIR}",
                    "userdel etcd >/dev/null 2>&1 || true",
                    "groupdel etcd >/dev/null 2>&1 || true",
                ],
            ),
        ]
    return "\n".join([*lines, remove_script()])


def read_file(conn: HostConnection, path: str) -> str:
    """A host file's text, never through a symlink (a link could point at a root-only
    file: its content would be shown, or written back elsewhere)."""
    p = q(path)
    result = conn.run(
        f'if [ -L {p} ]; then echo "{path} is a symlink: not read" >&2; exit 3; fi; cat {p}',
        quiet=True,
    )
    return result.stdout


def journal_tail(conn: HostConnection, lines: int = 12) -> str:
    """The member's last journal lines, without etcd's list of the variables it read."""
    result = conn.run(
        f"{journal(200)} | grep -v 'recognized and used environment variable' | tail -n {lines}",
        check=False,
        quiet=True,
    )
    return result.stdout.strip()


def apply_files(conn: HostConnection, files: list[DesiredFile]) -> None:
    """Write `files` in one command; systemd reloads its units when one of them changed."""
    reload = any(is_unit_file(f.path) for f in files)
    conn.run(write_files_script(files, reload), stdin=files_tar(files))
