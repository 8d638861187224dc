"""Off-site backups as a catalog (pure, no I/O): where they go, what each object is called,
the manifest stored beside it, and which ones retention deletes.

A destination is a folder or an S3 prefix (`BackupTarget`). Each backup is two objects:

    {cluster}-{YYYYmmddTHHMMSS}.{mmm}Z-r{revision}.db[.age]    the snapshot (age-encrypted
                                                                  when it ends in .age)
    <the same name>.json                                          its manifest

Names sort by time, so "newest" is the last name. The manifest is written after the snapshot
object is complete: a snapshot without its manifest is not a backup (an upload that died),
and is listed as incomplete, never restored, never counted by retention. The manifest names
the cluster's state dir id: two clusters with one name under one prefix never prune or
restore each other's backups.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MANIFEST_SUFFIX = ".json"
ENCRYPTED_SUFFIX = ".age"
MANIFEST_FORMAT = 1
_STAMP = "%Y%m%dT%H%M%S"
_NAME = re.compile(
    r"(?P<cluster>[a-z0-9][a-z0-9-]*)-(?P<stamp>\d{8}T\d{6})\.(?P<ms>\d{3})Z"
    r"-r(?P<revision>\d+)\.db(?P<age>\.age)?"
)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


SSH_RECIPIENT_TYPES = ("ssh-ed25519", "ssh-rsa")
RECIPIENT_HINT = (
    "not an age recipient (age1...) or an SSH public key (ssh-ed25519 ... / ssh-rsa ...)"
)


def recipient_kind(text: str) -> str | None:
    """ "age" (an X25519 `age1...` key), "ssh" (an SSH public key line) or None: what an
    `--encrypt-to` / `[backup] encrypt_to` value claims to be (the age library parses it)."""
    value = text.strip()
    if value.startswith("age1"):
        return "age"
    head, sep, _ = value.partition(" ")
    return "ssh" if sep and head in SSH_RECIPIENT_TYPES else None


@dataclass(frozen=True)
class BackupTarget:
    """Where backups go: an S3 bucket and key prefix, or a local folder.

    `prefix`: "" or ending in "/" (S3); the absolute folder (local). `name`: one backup's
    object name when the URL named one (restore), else None (the newest under the prefix).
    """

    scheme: str  # "s3" | "file"
    bucket: str
    prefix: str
    name: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    def url(self, name: str | None = None) -> str:
        """The URL of the prefix, or of `name` under it, as the user would write it."""
        tail = name or ""
        if self.is_s3:
            return f"s3://{self.bucket}/{self.prefix}{tail}"
        return str(Path(self.prefix) / tail) if tail else self.prefix


def parse_target(text: str, *, base: Path, one_backup: bool = False) -> BackupTarget:
    """`s3://BUCKET[/PREFIX/]`, `file:///PATH` or a path (relative to `base`). With
    `one_backup` (restore), a URL not ending in "/" names one backup (`.db` or `.db.age`);
    ending in "/" (or a local folder path that is no backup name) means the newest there.
    ValueError names what is wrong."""
    text = text.strip()
    if not text:
        raise ValueError("empty backup location")
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme == "s3":
            return _s3_target(text, parts.netloc, parts.path, one_backup)
        if parts.scheme != "file":
            raise ValueError(
                f"{text}: unsupported scheme {parts.scheme!r} (use s3://BUCKET/PREFIX/, "
                "file:///PATH or a local path)"
            )
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"{text}: a file:// URL names a path on this machine (file:///PATH)")
        text = parts.path
    path = Path(text) if Path(text).is_absolute() else base / text
    name = path.name if one_backup and parse_name(path.name) else None
    folder = path.parent if name else path
    return BackupTarget("file", "", str(folder), name)


def _s3_target(text: str, bucket: str, path: str, one_backup: bool) -> BackupTarget:
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{text}: {bucket!r} is not an S3 bucket name (3-63 of a-z 0-9 . -)")
    key = path.lstrip("/")
    if "//" in key or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"{text}: the key prefix has an empty, . or .. part")
    if one_backup and key and not key.endswith("/"):
        folder, _, name = key.rpartition("/")
        if parse_name(name) is None:
            raise ValueError(
                f"{text}: not a backup object name (CLUSTER-TIMEZ-rREVISION.db[.age]); "
                "end the URL with / for the newest backup under it"
            )
        return BackupTarget("s3", bucket, folder + "/" if folder else "", name)
    if key and not key.endswith("/"):
        key += "/"
    return BackupTarget("s3", bucket, key)


@dataclass(frozen=True)
class BackupName:
    """What a backup object's name says."""

    name: str
    cluster: str
    taken_at: datetime  # UTC
    revision: int
    encrypted: bool


def object_name(cluster: str, taken_at: datetime, revision: int, *, encrypted: bool) -> str:
    when = taken_at.astimezone(UTC)
    stamp = f"{when.strftime(_STAMP)}.{when.microsecond // 1000:03d}Z"
    return f"{cluster}-{stamp}-r{revision}.db" + (ENCRYPTED_SUFFIX if encrypted else "")


def parse_name(name: str) -> BackupName | None:
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    try:  # the pattern lets impossible dates through (20240230)
        taken = datetime.strptime(m["stamp"], _STAMP).replace(
            tzinfo=UTC, microsecond=int(m["ms"]) * 1000
        )
    except ValueError:
        return None
    return BackupName(name, m["cluster"], taken, int(m["revision"]), bool(m["age"]))


def manifest_name(name: str) -> str:
    return name + MANIFEST_SUFFIX


@dataclass(frozen=True)
class Manifest:
    """The JSON stored beside a backup. `size`/`sha256`: the stored bytes (what a download
    is checked against); `plain_size`/`plain_sha256`: the snapshot itself (what a
    decryption is checked against). Recipients are public keys: not secret."""

    object: str
    cluster: str
    cluster_id: str  # the state dir's id (the hosts' ownership marker): whose backup it is
    taken_at: str  # ISO 8601, UTC
    revision: int
    keys: int
    etcd_version: str
    members: int
    size: int
    sha256: str
    plain_size: int
    plain_sha256: str
    encrypted: bool
    recipients: tuple[str, ...] = ()
    source: str = ""
    format: int = MANIFEST_FORMAT
    tool: str = field(default="etcd-deploy")

    def to_json(self) -> str:
        data = asdict(self)
        data["recipients"] = list(self.recipients)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


_MANIFEST_TYPES: dict[str, type] = {
    "object": str,
    "cluster": str,
    "cluster_id": str,
    "taken_at": str,
    "revision": int,
    "keys": int,
    "etcd_version": str,
    "members": int,
    "size": int,
    "sha256": str,
    "plain_size": int,
    "plain_sha256": str,
    "encrypted": bool,
}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def parse_manifest(text: str, name: str) -> Manifest:
    """The manifest of backup `name`; ValueError saying what is wrong with it."""
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"manifest of {name} is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"manifest of {name} is not a JSON object")
    if data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"manifest of {name} has format {data.get('format')!r}, expected 1")
    for key, kind in _MANIFEST_TYPES.items():
        value = data.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"manifest of {name}: {key} is missing or not a {kind.__name__}")
    for key in ("sha256", "plain_sha256"):
        if not _SHA256.fullmatch(data[key]):
            raise ValueError(f"manifest of {name}: {key} is not a sha256")
    if data["object"] != name:
        raise ValueError(f"manifest of {name} describes {data['object']!r}")
    recipients = data.get("recipients", [])
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        raise ValueError(f"manifest of {name}: recipients is not a list of strings")
    return Manifest(
        **{key: data[key] for key in _MANIFEST_TYPES},
        recipients=tuple(recipients),
        source=str(data.get("source", "")),
    )


def stored_problem(manifest: Manifest, size: int, sha256: str) -> str | None:
    """Why the downloaded bytes are not the stored backup the manifest describes, or None."""
    if size != manifest.size:
        return f"{manifest.object}: {size} bytes downloaded, the manifest says {manifest.size}"
    if sha256 != manifest.sha256:
        return f"{manifest.object}: sha256 {sha256} does not match the manifest's {manifest.sha256}"
    return None


def plain_problem(manifest: Manifest, size: int, sha256: str) -> str | None:
    """Why the decrypted snapshot is not the one the manifest describes, or None."""
    if size != manifest.plain_size or sha256 != manifest.plain_sha256:
        return (
            f"{manifest.object}: the snapshot is {size} bytes with sha256 {sha256}; the "
            f"manifest says {manifest.plain_size} bytes, {manifest.plain_sha256}"
        )
    return None


@dataclass(frozen=True)
class Retention:
    """Keep the newest `keep`, and beyond them the newest one of each of the last
    `daily` days and `weekly` ISO weeks that hold a backup. All None: keep everything."""

    keep: int | None = None
    daily: int | None = None
    weekly: int | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.keep, self.daily, self.weekly))

    def describe(self) -> str:
        parts = [
            f"{label} {value}"
            for label, value in (
                ("--keep", self.keep),
                ("--keep-daily", self.daily),
                ("--keep-weekly", self.weekly),
            )
            if value is not None
        ]
        return " ".join(parts)


def expired(
    backups: Iterable[BackupName], rule: Retention, *, protect: Sequence[str] = ()
) -> list[BackupName]:
    """The complete backups of one cluster that `rule` deletes, oldest first. `protect`
    (the backup just written) is never deleted; an inactive rule deletes nothing."""
    if not rule.active:
        return []
    newest_first = sorted(backups, key=lambda b: (b.taken_at, b.name), reverse=True)
    kept = {b.name for b in newest_first[: rule.keep or 0]} | set(protect)
    for count, bucket in ((rule.daily, _day), (rule.weekly, _week)):
        if not count:
            continue
        seen: list[tuple[int, ...]] = []
        for b in newest_first:
            period = bucket(b.taken_at)
            if period in seen:
                continue
            if len(seen) == count:
                break
            seen.append(period)
            kept.add(b.name)
    return sorted((b for b in newest_first if b.name not in kept), key=lambda b: b.taken_at)


def _day(when: datetime) -> tuple[int, ...]:
    return (when.year, when.month, when.day)


def _week(when: datetime) -> tuple[int, ...]:
    year, week, _ = when.isocalendar()
    return (year, week)
