"""Snapshot files on the control machine: names, integrity, listing and pruning.

Pure logic plus local file access only (no network, no SSH, no subprocess).

A snapshot taken through etcd's v3 API (`etcdctl snapshot save`, the maintenance Snapshot
RPC) is a bbolt database followed by a 32-byte sha256 of everything before it. etcd checks
that hash at `snapshot restore` time only (`snapshot status` does not); `verify_integrity`
does the same check without any etcd binary. Control-machine snapshots are named
`{cluster}-{YYYYmmddTHHMMSS}.{mmm}Z.db` (UTC, milliseconds; `-2`, `-3`... before `.db` when
that name is taken: a name is never reused) and written through a `.part` file created
with O_EXCL. Names of earlier versions, to the second (`{cluster}-{YYYYmmddTHHMMSS}Z.db`),
are still listed and pruned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.core.errors import PreflightError, UsageError

HASH_SIZE = 32  # sha256 appended by etcd's snapshot stream
# bbolt meta page: a 16-byte page header (id u64, flags u16, count u16, overflow u32), then
# the meta: magic u32, version u32, page size u32... little endian on every etcd platform.
BOLT_MAGIC = 0xED0CDAED
BOLT_MAGIC_OFFSET = 16
# etcd's restore treats a file as carrying a hash when size % 512 == 32 (bbolt page sizes
# are multiples of 512); etcd server/storage/backend snapshot and etcdutl's v3_snapshot.go.
_HASH_BLOCK = 512
_CHUNK = 1024 * 1024
_STAMP = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class LocalBackup:
    """A snapshot file of one cluster in a local folder."""

    path: Path
    taken_at: datetime  # UTC, from the file name
    size: int


@dataclass(frozen=True)
class SnapshotStatus:
    """What `etcdutl snapshot status -w json` reports (hash is etcd's crc32 of the db)."""

    hash: int
    revision: int
    total_keys: int
    total_size: int


def _utc(when: datetime) -> datetime:
    """`when` in UTC; a naive datetime is taken as UTC already."""
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def snapshot_file_name(cluster: str, when: datetime, seq: int = 1) -> str:
    """`{cluster}-{YYYYmmddTHHMMSS}.{mmm}Z.db` for `when` in UTC (naive datetimes count as
    UTC); `seq` 2, 3... adds `-2`, `-3`... for a name taken already."""
    utc = _utc(when)
    suffix = f"-{seq}" if seq > 1 else ""
    return f"{cluster}-{utc:%Y%m%dT%H%M%S}.{utc.microsecond // 1000:03d}Z{suffix}.db"


def parse_snapshot_name(name: str, cluster: str) -> datetime | None:
    """The UTC time in a snapshot file name of `cluster`, or None for any other name
    (names to the second, of earlier versions, too)."""
    m = re.fullmatch(
        re.escape(cluster) + r"-([0-9]{8}T[0-9]{6})(?:\.([0-9]{3}))?Z(?:-[1-9][0-9]{0,5})?\.db",
        name,
        flags=re.ASCII,
    )
    if m is None:
        return None
    try:
        when = datetime.strptime(m.group(1) + "Z", _STAMP).replace(tzinfo=UTC)
    except ValueError:  # e.g. month 13
        return None
    return when.replace(microsecond=int(m.group(2) or 0) * 1000)


def create_part(folder: Path, cluster: str, when: datetime) -> tuple[Path, int]:
    """A new snapshot name in `folder` and its `.part` file, created here with O_EXCL (mode
    0600, never through a symlink): (final path, open descriptor of the `.part`). A name
    whose final file or `.part` exists already is never reused: the next `-N` is tried."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for seq in range(1, 1000):
        final = folder / snapshot_file_name(cluster, when, seq)
        if os.path.lexists(final):
            continue
        try:
            fd = os.open(final.with_name(final.name + ".part"), flags, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            raise PreflightError(
                f"cannot create a snapshot in {folder}: {exc.strerror or exc}"
            ) from None
        return final, fd
    raise PreflightError(f"cannot create a snapshot in {folder}: every name for {when} is taken")


def publish(part: Path, final: Path) -> Path:
    """Give the finished `part` its final name without replacing anything (a hard link
    fails when the name exists: then `-N` names are tried); returns the name it got."""
    first = _seq(final.name)
    for seq in range(first, first + 1000):
        target = final if seq == first else final.with_name(_with_seq(final.name, seq))
        try:
            os.link(part, target)
        except FileExistsError:
            continue
        except OSError:  # no hard links on this file system: rename when the name is free
            if os.path.lexists(target):
                continue
            os.rename(part, target)
            return target
        part.unlink()
        return target
    raise PreflightError(f"cannot name the snapshot {final}: every name is taken")


def _seq(name: str) -> int:
    """The `-N` of a snapshot name (1 without one): later names in one millisecond."""
    m = re.search(r"Z-([0-9]+)\.db$", name)
    return int(m.group(1)) if m else 1


def _with_seq(name: str, seq: int) -> str:
    """`name` (`...Z.db` or `...Z-N.db`) with the sequence number `seq` instead."""
    stem = re.sub(r"(-[1-9][0-9]*)?\.db$", "", name)
    return f"{stem}-{seq}.db"


def verify_integrity(path: Path) -> str:
    """Check the sha256 that etcd appends to a snapshot; return the sha256 hex of the file.

    Raises PreflightError (one line, naming the file) when the file cannot be read, is not a
    bbolt database, has no appended hash (a copied `member/snap/db`, which etcd restores
    only with --skip-hash-check) or its hash does not match (corrupt or truncated).
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(BOLT_MAGIC_OFFSET + 4)
            if size < HASH_SIZE + 1 or len(head) < BOLT_MAGIC_OFFSET + 4:
                raise PreflightError(f"snapshot {path} is corrupt or truncated: only {size} bytes")
            (magic,) = struct.unpack_from("<I", head, BOLT_MAGIC_OFFSET)
            if magic != BOLT_MAGIC:
                raise PreflightError(f"{path} is not an etcd snapshot: no bbolt database header")
            if size % _HASH_BLOCK != HASH_SIZE:
                if size % _HASH_BLOCK == 0:
                    raise PreflightError(
                        f"snapshot {path} has no integrity hash (a copied member/snap/db "
                        "file? take snapshots with `snapshot save`)"
                    )
                raise PreflightError(
                    f"snapshot {path} is corrupt or truncated: its size ({size} bytes) is "
                    "not whole database pages plus a 32-byte hash"
                )
            f.seek(0)
            whole = hashlib.sha256()
            body = hashlib.sha256()
            remaining = size - HASH_SIZE
            while remaining > 0:
                chunk = f.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                whole.update(chunk)
                body.update(chunk)
                remaining -= len(chunk)
            trailer = f.read(HASH_SIZE)
            whole.update(trailer)
            if remaining or len(trailer) != HASH_SIZE or f.read(1):
                raise PreflightError(
                    f"snapshot {path} is corrupt or truncated: it changed while being read"
                )
    except OSError as exc:
        raise PreflightError(f"cannot read snapshot {path}: {exc.strerror or exc}") from None
    if body.digest() != trailer:
        raise PreflightError(f"snapshot {path} is corrupt or truncated: integrity hash mismatch")
    return whole.hexdigest()


def list_local(folder: Path, cluster: str) -> list[LocalBackup]:
    """Snapshot files of `cluster` in `folder`, newest first (a missing folder: none).

    Only regular files named like `snapshot_file_name` count: `.part` files and anything
    else are ignored.
    """
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise PreflightError(f"cannot list {folder}: {exc.strerror or exc}") from None
    found: list[LocalBackup] = []
    for entry in entries:
        taken_at = parse_snapshot_name(entry.name, cluster)
        if taken_at is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed meanwhile
            continue
        except OSError as exc:
            raise PreflightError(f"cannot read {entry}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(st.st_mode):
            continue
        found.append(LocalBackup(entry, taken_at, st.st_size))
    found.sort(key=lambda b: (b.taken_at, _seq(b.path.name), b.path.name), reverse=True)
    return found


def prune_local(folder: Path, cluster: str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` (>= 1) snapshots of `cluster`; return the deleted."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise UsageError(f"--keep: expected a whole number of at least 1, got {keep!r}")
    deleted: list[Path] = []
    for backup in list_local(folder, cluster)[keep:]:
        try:
            backup.path.unlink()
        except FileNotFoundError:  # pruned concurrently
            continue
        except OSError as exc:
            raise PreflightError(
                f"cannot delete old snapshot {backup.path}: {exc.strerror or exc}"
            ) from None
        deleted.append(backup.path)
    return deleted


_STATUS_FIELDS = {
    "hash": "hash",
    "revision": "revision",
    "total_keys": "totalKey",
    "total_size": "totalSize",
}


def parse_status_json(text: str) -> SnapshotStatus:
    """Parse `etcdutl snapshot status -w json` (3.5+) / `etcdctl ... -w json` (3.4).

    Both print one line like {"hash":1250086263,"revision":6,"totalKey":11,"totalSize":20480};
    unknown extra fields are ignored. PreflightError when the text is not such an object.
    """
    data: object = None
    candidates = [text.strip()]
    candidates += [line.strip() for line in text.splitlines() if line.strip().startswith("{")]
    for candidate in candidates:
        with contextlib.suppress(ValueError):
            data = json.loads(candidate)
            if isinstance(data, dict):
                break
    shown = text.strip().replace("\n", " ")[:200]
    if not isinstance(data, dict):
        raise PreflightError(f"unexpected snapshot status output (not a JSON object): {shown!r}")
    values: dict[str, int] = {}
    for attr, key in _STATUS_FIELDS.items():
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PreflightError(
                f"unexpected snapshot status output (no whole number {key!r}): {shown!r}"
            )
        values[attr] = value
    return SnapshotStatus(**values)
