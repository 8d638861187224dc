"""Off-site backups: `backup --to URL` (a snapshot, verified, age-encrypted on this machine,
stored in a folder or an S3-compatible store with its manifest, then retention),
`backup list --to URL`, and fetching one back for `restore URL` / `up --from-snapshot URL`
(downloaded, checked against its manifest, decrypted, checked again and by etcd's own hash,
all before anything on a host stops).

Snapshots hold every secret of the cluster: the staging files on this machine are 0600 in
the state dir and removed once stored; without a recipient, a backup to an object store is
stored in clear and says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from orchestrator.adapters.age_crypto import (
    HashingWriter,
    decrypt,
    encrypt,
    load_identities,
    parse_recipient,
)
from orchestrator.adapters.backup_store import S3Settings, Store, open_store
from orchestrator.adapters.snapshot import parse_snapshot_name, verify_integrity
from orchestrator.commands.backup import run_backup
from orchestrator.core.backup_catalog import (
    BackupName,
    BackupTarget,
    Manifest,
    Retention,
    expired,
    manifest_name,
    object_name,
    parse_manifest,
    parse_name,
    parse_target,
    plain_problem,
    stored_problem,
)
from orchestrator.core.errors import (
    EXIT_CHANGES_PENDING,
    EXIT_OK,
    BackupStoreError,
    PreflightError,
    UsageError,
)
from orchestrator.engine.context import RunContext

STAGING_DIR = "staging"


@dataclass(frozen=True)
class OffsiteRequest:
    """What `backup --to` was asked, the [backup] table filled in under the options."""

    target: BackupTarget
    recipients: tuple[str, ...]
    retention: Retention
    settings: S3Settings


def offsite_request(
    ctx: RunContext,
    to: str | None,
    encrypt_to: list[str],
    retention: Retention,
    out_dir: Path | None = None,
) -> OffsiteRequest | None:
    """The off-site request from the options and [backup], or None for a local backup
    (`-o DIR` keeps one local even when [backup] to is set). Bad input: UsageError, before
    any connection."""
    if out_dir is not None:
        if to is not None:
            raise UsageError("-o and --to: choose one")
        return None
    b = ctx.inv.backup
    where = to or b.to
    if where is None:
        return None
    try:
        target = parse_target(where, base=Path.cwd() if to else ctx.inv.path.parent)
    except ValueError as exc:
        raise UsageError(f"--to: {exc}") from None
    recipients = tuple(encrypt_to) or b.encrypt_to
    for recipient in recipients:
        parse_recipient(recipient)
    if not retention.active:
        retention = Retention(b.keep, b.keep_daily, b.keep_weekly)
    return OffsiteRequest(target, recipients, retention, _settings(ctx))


def _settings(ctx: RunContext) -> S3Settings:
    b = ctx.inv.backup
    return S3Settings(b.endpoint_url, b.region, b.profile)


@contextlib.contextmanager
def staging(ctx: RunContext) -> Iterator[Path]:
    """A private folder for this run's staging files, removed at the end. Folders that a
    killed run left behind (its process gone) are removed first: they may hold a snapshot
    in clear."""
    base = ctx.inv.cluster.state_dir / STAGING_DIR
    folder = base / f"run-{os.getpid()}"
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in base.glob("run-*"):
            if stale != folder and not _alive(stale.name.removeprefix("run-")):
                shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(mode=0o700)
    except OSError as exc:
        raise UsageError(f"{base}: cannot make a staging folder ({exc.strerror or exc})") from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class OffsiteResult:
    url: str
    manifest: dict[str, Any]
    deleted: list[str]


def run_offsite_backup(ctx: RunContext, request: OffsiteRequest) -> OffsiteResult:
    """Snapshot (verified as `backup` does), encrypt, store, write the manifest, prune."""
    inv = ctx.inv
    recipients = [parse_recipient(r) for r in request.recipients]
    store = open_store(request.target, request.settings)
    if not recipients and request.target.is_s3:
        ctx.ui.warn(
            "backup",
            f"no --encrypt-to recipient: the snapshot goes to {store.where} in clear "
            "(it holds every secret of the cluster)",
        )
    with staging(ctx) as folder:
        taken = run_backup(ctx, out_dir=folder, keep=None)
        plain = Path(taken.file)
        when = parse_snapshot_name(plain.name, inv.cluster.name)
        assert when is not None  # run_backup names its files so
        name = object_name(inv.cluster.name, when, taken.revision, encrypted=bool(recipients))
        stored, sha, size = plain, taken.sha256, taken.size
        if recipients:
            stored = folder / name
            with open(plain, "rb") as src, _private(stored) as raw:
                sink = HashingWriter(raw)
                encrypt(src, sink, recipients)
            sha, size = sink.sha.hexdigest(), sink.size
        manifest = Manifest(
            object=name,
            cluster=inv.cluster.name,
            cluster_id=ctx.pki.cluster_id(create=False),
            taken_at=when.isoformat(),
            revision=taken.revision,
            keys=taken.keys,
            etcd_version=str(inv.cluster.etcd_version),
            members=len(inv.hosts),
            size=size,
            sha256=sha,
            plain_size=taken.size,
            plain_sha256=taken.sha256,
            encrypted=bool(recipients),
            recipients=request.recipients,
            source=taken.source,
        )
        with open(stored, "rb") as src, ctx.ui.progress(f"[backup] {name}", size) as bar:
            store.put(name, src, lambda done: bar(done))
        try:
            store.put_text(manifest_name(name), manifest.to_json())
        except BackupStoreError:
            with contextlib.suppress(BackupStoreError):  # no snapshot left without a manifest
                store.delete([name])
            raise
    url = request.target.url(name)
    ctx.ui.info(
        "backup",
        f"stored {url}: {size} bytes{', age-encrypted' if recipients else ''}, revision "
        f"{taken.revision}, {taken.keys} keys, sha256 {sha}",
    )
    deleted = prune(ctx, store, request.target, request.retention, protect=parse_name(name))
    return OffsiteResult(url, asdict(manifest), deleted)


@contextlib.contextmanager
def _private(path: Path) -> Iterator[IO[bytes]]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        yield out
        out.flush()
        os.fsync(out.fileno())


@dataclass(frozen=True)
class Listed:
    """One backup at a destination, from its name and its manifest."""

    name: BackupName
    manifest: Manifest | None
    problem: str | None  # why it is not a usable backup (no manifest, a bad one)


def catalog(store: Store, cluster: str | None, cluster_id: str = "") -> list[Listed]:
    """Every backup object at `store` (of `cluster`, when given), newest first. With
    `cluster_id`, a backup whose manifest names another id has a problem: it belongs to
    another cluster of the same name (never pruned, never restored as "the newest")."""
    names = store.names()
    present = set(names)
    out: list[Listed] = []
    for raw in names:
        parsed = parse_name(raw)
        if parsed is None or (cluster is not None and parsed.cluster != cluster):
            continue
        if manifest_name(raw) not in present:
            out.append(Listed(parsed, None, "incomplete: no manifest (an upload that died?)"))
            continue
        try:
            manifest = parse_manifest(store.get_text(manifest_name(raw)), raw)
        except ValueError as exc:
            out.append(Listed(parsed, None, str(exc)))
            continue
        other = cluster_id and manifest.cluster_id != cluster_id
        problem = f"another cluster named {parsed.cluster} (id {manifest.cluster_id})"
        out.append(Listed(parsed, manifest, problem if other else None))
    return sorted(out, key=lambda b: (b.name.taken_at, b.name.name), reverse=True)


def _ours(ctx: RunContext, store: Store) -> list[BackupName]:
    """This cluster's complete backups at `store` (its name and its state dir's id)."""
    listed = catalog(store, ctx.inv.cluster.name, ctx.pki.cluster_id(create=False))
    return [b.name for b in listed if b.manifest is not None and b.problem is None]


def prune(
    ctx: RunContext,
    store: Store,
    target: BackupTarget,
    rule: Retention,
    *,
    protect: BackupName | None,
    dry_run: bool = False,
) -> list[str]:
    """Delete what `rule` expires among this cluster's complete backups, counting and
    never deleting `protect` (the backup just written; for a dry run, the one a real run
    would write now)."""
    if not rule.active:
        return []
    backups = _ours(ctx, store)
    if protect is not None and protect.name not in {b.name for b in backups}:
        backups.append(protect)
    gone = expired(backups, rule, protect=[protect.name] if protect else [])
    for backup in gone:
        verb = "would delete" if dry_run else "deleted"
        if not dry_run:
            store.delete([backup.name, manifest_name(backup.name)])
        ctx.ui.info("backup", f"{verb} {target.url(backup.name)} ({rule.describe()})")
    return [b.name for b in gone]


def preview_retention(ctx: RunContext, request: OffsiteRequest) -> int:
    """`backup --to URL --dry-run`: what retention would delete now (nothing is taken);
    exit 10 when it would delete something."""
    store = open_store(request.target, request.settings)
    upcoming = parse_name(object_name(ctx.inv.cluster.name, datetime.now(UTC), 0, encrypted=False))
    gone = prune(ctx, store, request.target, request.retention, protect=upcoming, dry_run=True)
    if not gone:
        ctx.ui.info(
            "backup", f"retention ({request.retention.describe() or 'none'}) deletes nothing"
        )
    return EXIT_CHANGES_PENDING if gone else EXIT_OK


def run_offsite_list(ctx: RunContext, request: OffsiteRequest, *, as_json: bool) -> None:
    store = open_store(request.target, request.settings)
    rows = catalog(store, ctx.inv.cluster.name, ctx.pki.cluster_id(create=False))
    if as_json:
        ctx.ui.print_json(
            {
                "location": request.target.url(),
                "backups": [
                    {
                        "name": b.name.name,
                        "url": request.target.url(b.name.name),
                        "taken_at": b.name.taken_at.isoformat(),
                        "revision": b.name.revision,
                        "encrypted": b.name.encrypted,
                        "size": b.manifest.size if b.manifest else None,
                        "complete": b.manifest is not None,
                        "problem": b.problem,
                    }
                    for b in rows
                ],
            }
        )
        return
    ctx.ui.table(
        f"backups of cluster {ctx.inv.cluster.name} at {request.target.url()}, newest first",
        ["TAKEN (UTC)", "REVISION", "SIZE", "ENCRYPTED", "STATE", "NAME"],
        [
            [
                b.name.taken_at.strftime("%Y-%m-%d %H:%M:%S"),
                str(b.name.revision),
                str(b.manifest.size) if b.manifest else "?",
                "age" if b.name.encrypted else "no",
                b.problem or "complete",
                b.name.name,
            ]
            for b in rows
        ],
    )


def fetch_backup(
    ctx: RunContext, url: str, identity: Path | None, folder: Path
) -> tuple[Path, Manifest]:
    """Download one backup into `folder` (the newest of this cluster when `url` ends in
    "/"), check it against its manifest, decrypt it with `identity`, check the snapshot
    against the manifest and etcd's own hash. Returns the plain snapshot's path. Nothing on
    any host changes here; any mismatch is BackupStoreError (exit 8)."""
    try:
        target = parse_target(url, base=Path.cwd(), one_backup=True)
    except ValueError as exc:
        raise UsageError(f"restore: {exc}") from None
    store = open_store(target, _settings(ctx))
    name = target.name or _newest(ctx, store, target)
    parsed = parse_name(name)
    assert parsed is not None  # parse_target and _newest only give backup names
    if parsed.encrypted and identity is None:
        raise UsageError(f"{target.url(name)} is age-encrypted: give --identity FILE")
    identities = load_identities(identity) if parsed.encrypted and identity else []
    try:
        manifest = parse_manifest(store.get_text(manifest_name(name)), name)
    except ValueError as exc:
        raise BackupStoreError(f"{target.url(name)}: {exc}") from None
    ctx.ui.info(
        "restore",
        f"fetching {target.url(name)} (revision {manifest.revision}, taken {manifest.taken_at})",
    )
    stored = folder / name
    with _private(stored) as raw, ctx.ui.progress(f"[restore] {name}", manifest.size) as bar:
        out = HashingWriter(raw)
        store.get(name, out, lambda done: bar(done))
    problem = stored_problem(manifest, out.size, out.sha.hexdigest())
    if problem:
        raise BackupStoreError(problem + "; nothing was changed")
    plain = stored
    if parsed.encrypted:
        plain = folder / name.removesuffix(".age")
        with open(stored, "rb") as src, _private(plain) as raw:
            sink = HashingWriter(raw)
            decrypt(src, sink, identities, target.url(name))
        problem = plain_problem(manifest, sink.size, sink.sha.hexdigest())
        if problem:
            raise BackupStoreError(problem + "; nothing was changed")
    try:
        verify_integrity(plain)
    except PreflightError as exc:
        raise BackupStoreError(f"{target.url(name)}: {exc}; nothing was changed") from None
    ctx.ui.info("restore", f"{name}: matches its manifest and etcd's own hash")
    return plain, manifest


def _newest(ctx: RunContext, store: Store, target: BackupTarget) -> str:
    complete = _ours(ctx, store)
    if not complete:
        raise BackupStoreError(
            f"{target.url()}: no complete backup of cluster {ctx.inv.cluster.name} there"
        )
    return complete[0].name  # the catalog lists newest first


def is_offsite(source: str) -> bool:
    """Whether `restore SOURCE` names an off-site backup (a URL, a prefix ending in "/",
    a file `backup --to` wrote, beside its manifest) rather than a snapshot file (one
    decrypted by hand with `age -d` included)."""
    if source.startswith(("s3://", "file://")) or source.endswith("/"):
        return True
    parsed = parse_name(Path(source).name)  # a file `backup --to` wrote, with its manifest
    return parsed is not None and (parsed.encrypted or Path(source + ".json").exists())


def run_restore_from(ctx: RunContext, source: str, identity: Path | None, **restore: Any) -> int:
    """`restore SOURCE` / `up --from-snapshot SOURCE`: an off-site backup is fetched and
    verified first (`fetch_backup`), then restored like a local file."""
    from orchestrator.commands.restore import run_restore

    if not is_offsite(source):
        if identity is not None:
            raise UsageError("--identity is for age-encrypted off-site backups only")
        return run_restore(ctx, Path(source), **restore)
    with staging(ctx) as folder:
        plain, _manifest = fetch_backup(ctx, source, identity, folder)
        return run_restore(ctx, plain, **restore)


def timer_units(
    ctx: RunContext, request: OffsiteRequest, *, on_calendar: str, env_file: str
) -> dict[str, str]:
    """`backup timer`: file name -> text of the service and timer that run this
    `backup --to` on this (operations) machine, with this inventory."""
    from orchestrator.core.ops_units import (
        render_offsite_service,
        render_offsite_timer,
        unit_name,
    )

    inv = ctx.inv
    found = shutil.which("etcd-deploy")
    program = [str(Path(found).resolve())] if found else [sys.executable, "-m", "orchestrator"]
    command = [*program, "backup", "-i", str(inv.path), "--to", request.target.url()]
    for recipient in request.recipients:
        command += ["--encrypt-to", recipient]
    rule = request.retention
    for option, value in (
        ("--keep", rule.keep),
        ("--keep-daily", rule.daily),
        ("--keep-weekly", rule.weekly),
    ):
        if value is not None:
            command += [option, str(value)]
    name = unit_name(inv.cluster.name)
    header = (
        f"# Written by `etcd-deploy backup timer` (cluster {inv.cluster.name}) for the "
        "operations machine that holds the inventory and the CA."
    )
    return {
        f"{name}.service": render_offsite_service(
            inv.cluster.name, command, env_file, header=header
        ),
        f"{name}.timer": render_offsite_timer(inv.cluster.name, on_calendar, header=header),
    }
