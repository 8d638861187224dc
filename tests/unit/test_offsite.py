"""`backup --to FOLDER` and fetching it back, on this machine only: a real snapshot file (the
cluster faked as in test_backup_local), real age encryption (pyrage), a folder store.
The S3 store is covered end to end against a real server (tests/e2e/test_offsite_backup)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest
from pyrage import x25519

from orchestrator.adapters.age_crypto import load_identities, parse_recipient
from orchestrator.adapters.backup_store import FolderStore, S3Settings
from orchestrator.commands import backup, offsite
from orchestrator.core.backup_catalog import BackupTarget, Retention
from orchestrator.core.errors import BackupStoreError, UsageError
from tests.unit.test_backup_local import REAL, Ctx, ctx

__all__ = ["ctx"]


def _identity(folder: Path, name: str = "ops") -> tuple[Path, str]:
    identity = x25519.Identity.generate()
    path = folder / f"{name}.txt"
    path.write_text(f"# created: now\n# public key: {identity.to_public()}\n{identity}\n")
    return path, str(identity.to_public())


def _request(folder: Path, recipients: tuple[str, ...] = (), **keep: int) -> offsite.OffsiteRequest:
    return offsite.OffsiteRequest(
        BackupTarget("file", "", str(folder)), recipients, Retention(**keep), S3Settings()
    )


def test_encrypted_to_a_folder_then_fetched_back(ctx: Ctx, tmp_path: Path) -> None:
    identity, recipient = _identity(tmp_path)
    store = tmp_path / "nas"
    result = offsite.run_offsite_backup(ctx, _request(store, (recipient,)))  # type: ignore[arg-type]
    name = result.manifest["object"]
    assert name.startswith("demo-20240506T103045.123Z-r7.db") and name.endswith(".age")
    assert sorted(p.name for p in store.iterdir()) == [name, name + ".json"]
    stored = (store / name).read_bytes()
    assert stored.startswith(b"age-encryption.org/v1\n") and REAL.read_bytes() not in stored
    assert os.stat(store / name).st_mode & 0o777 == 0o600
    manifest = json.loads((store / (name + ".json")).read_text())
    assert manifest["plain_size"] == REAL.stat().st_size and manifest["encrypted"] is True
    assert manifest["recipients"] == [recipient] and manifest["size"] == len(stored)
    staging = ctx.inv.cluster.state_dir / offsite.STAGING_DIR
    assert list(staging.iterdir()) == []  # nothing left in clear here

    out = tmp_path / "fetched"
    out.mkdir()
    plain, got = offsite.fetch_backup(ctx, f"{store}/", identity, out)  # type: ignore[arg-type]
    assert plain.read_bytes() == REAL.read_bytes() and got.object == name


def test_refusals_when_fetching(ctx: Ctx, tmp_path: Path) -> None:
    identity, recipient = _identity(tmp_path)
    other, _ = _identity(tmp_path, "other")
    store = tmp_path / "nas"
    name = offsite.run_offsite_backup(ctx, _request(store, (recipient,))).manifest["object"]  # type: ignore[arg-type]
    out = tmp_path / "fetched"
    out.mkdir()

    def fetch(url: str, key: Path | None) -> str:
        for leftover in out.iterdir():
            leftover.unlink()
        with pytest.raises((BackupStoreError, UsageError)) as caught:
            offsite.fetch_backup(ctx, url, key, out)  # type: ignore[arg-type]
        return str(caught.value)

    url = f"{store}/{name}"
    assert "give --identity FILE" in fetch(url, None)
    assert "none of the --identity keys" in fetch(url, other)
    manifest_path = store / (name + ".json")
    good = manifest_path.read_text()
    manifest_path.write_text(good.replace('"plain_sha256": "', '"plain_sha256": "0'))
    assert "is not a sha256" in fetch(url, identity)
    data = json.loads(good)
    manifest_path.write_text(json.dumps(dict(data, plain_sha256="0" * 64)))
    assert "the manifest says" in fetch(url, identity)
    manifest_path.write_text(good)
    stored = (store / name).read_bytes()
    (store / name).write_bytes(stored[:-100])
    assert "bytes downloaded" in fetch(url, identity)
    manifest_path.write_text(
        json.dumps(dict(data, size=len(stored) - 100, sha256=_sha(stored[:-100])))
    )
    assert "truncated or damaged" in fetch(url, identity)
    (manifest_path).unlink()
    assert "cannot read it" in fetch(url, identity)
    assert "no complete backup of cluster demo" in fetch(f"{store}/", identity)


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_retention_in_a_folder_never_deletes_the_new_one(
    ctx: Ctx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backup, "datetime", datetime)  # a new name each time
    store = tmp_path / "nas"
    for _ in range(3):
        offsite.run_offsite_backup(ctx, _request(store, keep=2))  # type: ignore[arg-type]
    listed = offsite.catalog(FolderStore(store), "demo")
    assert len(listed) == 2 and all(b.manifest is not None for b in listed)
    before = sorted(store.iterdir())
    # a dry run counts the backup a real run would write now, and deletes nothing
    assert offsite.preview_retention(ctx, _request(store, keep=2)) == 10  # type: ignore[arg-type]
    assert offsite.preview_retention(ctx, _request(store, keep=3)) == 0  # type: ignore[arg-type]
    assert sorted(store.iterdir()) == before
    # an upload that died (no manifest) is listed as incomplete and never counted
    (store / "demo-20200101T000000.000Z-r1.db").write_bytes(b"partial")
    listed = offsite.catalog(FolderStore(store), "demo")
    assert listed[-1].problem is not None and "incomplete" in listed[-1].problem


def test_identity_files_and_recipients(tmp_path: Path) -> None:
    identity, recipient = _identity(tmp_path)
    assert len(load_identities(identity)) == 1
    parse_recipient(recipient)
    parse_recipient(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops"
    )
    with pytest.raises(UsageError, match="not an age recipient"):
        parse_recipient("age1notvalid")
    bad = tmp_path / "bad.txt"
    bad.write_text("# nothing here\n")
    with pytest.raises(UsageError, match="not an age identity file"):
        load_identities(bad)
    with pytest.raises(UsageError, match="cannot read it"):
        load_identities(tmp_path / "missing.txt")


def test_another_cluster_of_the_same_name_is_never_pruned_nor_restored(
    ctx: Ctx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clusters named "demo" (two state dirs) share a prefix: each prunes and restores
    only its own backups (the manifest's cluster_id)."""
    monkeypatch.setattr(backup, "datetime", datetime)
    store = tmp_path / "nas"
    theirs = offsite.run_offsite_backup(ctx, _request(store)).manifest["object"]  # type: ignore[arg-type]
    manifest = store / (theirs + ".json")
    manifest.write_text(manifest.read_text().replace('"3f2a9c1d"', '"0badc0de"'))
    for _ in range(2):
        offsite.run_offsite_backup(ctx, _request(store, keep=1))  # type: ignore[arg-type]
    listed = offsite.catalog(FolderStore(store), "demo", "3f2a9c1d")
    assert [b.name.name for b in listed][-1] == theirs and len(listed) == 2
    assert listed[-1].problem == "another cluster named demo (id 0badc0de)"
    os.remove(store / listed[0].name.name)
    os.remove(store / (listed[0].name.name + ".json"))
    out = tmp_path / "fetched"
    out.mkdir()
    with pytest.raises(BackupStoreError, match="no complete backup of cluster demo"):
        offsite.fetch_backup(ctx, f"{store}/", None, out)  # type: ignore[arg-type]


def test_which_restore_sources_are_off_site(tmp_path: Path) -> None:
    name = "demo-20240506T103045.123Z-r7.db"
    assert offsite.is_offsite("s3://b/x/" + name)
    assert offsite.is_offsite("s3://b/x/") and offsite.is_offsite(f"{tmp_path}/")
    assert offsite.is_offsite(str(tmp_path / (name + ".age")))
    plain = tmp_path / name  # e.g. decrypted by hand with `age -d`: a snapshot file
    assert not offsite.is_offsite(str(plain))
    (tmp_path / (name + ".json")).write_text("{}")
    assert offsite.is_offsite(str(plain))  # as `backup --to FOLDER` left it
    assert not offsite.is_offsite(str(tmp_path / "demo-20240230T103045.123Z-r7.db"))


def test_a_failed_manifest_upload_leaves_no_snapshot_behind(
    ctx: Ctx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection dies between the object and its manifest: the object is deleted
    (no clear snapshot without a manifest, which retention would never count)."""

    class Failing(FolderStore):
        def put_text(self, name: str, text: str) -> None:
            raise BackupStoreError(f"{name}: connection reset")

    store = tmp_path / "nas"
    monkeypatch.setattr(
        offsite, "open_store", lambda target, _settings: Failing(Path(target.prefix))
    )
    with pytest.raises(BackupStoreError, match="connection reset"):
        offsite.run_offsite_backup(ctx, _request(store))  # type: ignore[arg-type]
    assert list(store.iterdir()) == []
