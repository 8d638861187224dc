"""Off-site backup catalog: destinations, names, manifests, retention (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

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
    recipient_kind,
    stored_problem,
)

WHEN = datetime(2026, 12, 3, 17, 4, 5, 678901, tzinfo=UTC)
NAME = "prod-20261203T170405.678Z-r1234.db.age"


# --------------------------------------------------------------------------- destinations


@pytest.mark.parametrize(
    ("text", "one", "expected"),
    [
        ("s3://backups", False, BackupTarget("s3", "backups", "")),
        ("s3://backups/", False, BackupTarget("s3", "backups", "")),
        ("s3://backups/etcd/prod", False, BackupTarget("s3", "backups", "etcd/prod/")),
        ("s3://backups/etcd/prod/", True, BackupTarget("s3", "backups", "etcd/prod/")),
        (f"s3://backups/etcd/{NAME}", True, BackupTarget("s3", "backups", "etcd/", NAME)),
        (f"s3://backups/{NAME}", True, BackupTarget("s3", "backups", "", NAME)),
        ("/srv/backups", False, BackupTarget("file", "", "/srv/backups")),
        ("file:///srv/backups/", False, BackupTarget("file", "", "/srv/backups")),
        ("rel/dir", False, BackupTarget("file", "", "/base/rel/dir")),
        (f"/srv/b/{NAME}", True, BackupTarget("file", "", "/srv/b", NAME)),
        ("/srv/b", True, BackupTarget("file", "", "/srv/b")),
    ],
)
def test_destinations(text: str, one: bool, expected: BackupTarget) -> None:
    assert parse_target(text, base=Path("/base"), one_backup=one) == expected


@pytest.mark.parametrize(
    ("text", "one", "message"),
    [
        ("", False, "empty backup location"),
        ("gs://bucket/x", False, "unsupported scheme 'gs'"),
        ("s3://B_ad/", False, "is not an S3 bucket name"),
        ("s3://b/", False, "is not an S3 bucket name"),
        ("s3://bucket/a//b/", False, "empty, . or .. part"),
        ("s3://bucket/../x/", False, "empty, . or .. part"),
        ("s3://bucket/etcd/latest.db", True, "not a backup object name"),
        ("file://host/srv", False, "a file:// URL names a path on this machine"),
    ],
)
def test_bad_destinations(text: str, one: bool, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_target(text, base=Path("/base"), one_backup=one)


def test_urls_round_trip() -> None:
    target = BackupTarget("s3", "backups", "etcd/")
    assert target.url() == "s3://backups/etcd/"
    assert target.url(NAME) == f"s3://backups/etcd/{NAME}"
    assert BackupTarget("file", "", "/srv/b").url(NAME) == f"/srv/b/{NAME}"


# --------------------------------------------------------------------------- names


def test_names_carry_cluster_time_revision_and_encryption() -> None:
    assert object_name("prod", WHEN, 1234, encrypted=True) == NAME
    assert object_name("prod", WHEN, 1234, encrypted=False) == NAME.removesuffix(".age")
    parsed = parse_name(NAME)
    assert parsed == BackupName(NAME, "prod", WHEN.replace(microsecond=678000), 1234, True)
    assert manifest_name(NAME) == NAME + ".json"


def test_names_sort_by_time() -> None:
    names = [
        object_name("c", WHEN + timedelta(seconds=s), 10 - s, encrypted=False)
        for s in (0, 1, 60, 3600)
    ]
    assert sorted(names) == names


@pytest.mark.parametrize(
    "name",
    [
        "prod-20261203T170405.678Z-r1234.db.json",
        "prod-20261203T170405Z.db",  # a local backup's name (no revision)
        "prod-20261203T170405.678Z-r.db",
        "Prod-20261203T170405.678Z-r1.db",
        "prod-20261203T170405.678Z-r1.db.part",
        "prod-20240230T000000.000Z-r1.db",  # no such day
    ],
)
def test_other_names_are_not_backups(name: str) -> None:
    assert parse_name(name) is None


# --------------------------------------------------------------------------- manifests


def manifest(**changes: object) -> Manifest:
    base = Manifest(
        object=NAME,
        cluster="prod",
        cluster_id="3f2a9c1d",
        taken_at=WHEN.isoformat(),
        revision=1234,
        keys=42,
        etcd_version="3.5.30",
        members=3,
        size=2000,
        sha256="a" * 64,
        plain_size=1900,
        plain_sha256="b" * 64,
        encrypted=True,
        recipients=("age1example",),
        source="etcd1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_manifest_round_trips() -> None:
    m = manifest()
    assert parse_manifest(m.to_json(), NAME) == m


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "is not JSON"),
        ("[]", "is not a JSON object"),
        (manifest().to_json().replace('"format": 1', '"format": 2'), "has format 2"),
        (manifest().to_json().replace('"revision": 1234', '"revision": "1234"'), "revision"),
        (manifest().to_json().replace('"encrypted": true', '"encrypted": 1'), "encrypted"),
        (manifest().to_json().replace('"size": 2000', '"size": true'), "size"),
        (manifest().to_json().replace("a" * 64, "A" * 64), "sha256 is not a sha256"),
        (manifest(object="other.db").to_json(), "describes 'other.db'"),
    ],
)
def test_bad_manifests(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_manifest(text, NAME)


def test_download_and_decryption_checks() -> None:
    m = manifest()
    assert stored_problem(m, 2000, "a" * 64) is None
    assert "1999 bytes downloaded" in (stored_problem(m, 1999, "a" * 64) or "")
    assert "does not match" in (stored_problem(m, 2000, "c" * 64) or "")
    assert plain_problem(m, 1900, "b" * 64) is None
    assert "the manifest says 1900 bytes" in (plain_problem(m, 1900, "c" * 64) or "")


# --------------------------------------------------------------------------- retention


def series(*hours_ago: float) -> list[BackupName]:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    out = []
    for h in hours_ago:
        when = now - timedelta(hours=h)
        name = object_name("prod", when, 100, encrypted=False)
        parsed = parse_name(name)
        assert parsed is not None
        out.append(parsed)
    return out


def hours(backups: list[BackupName]) -> list[float]:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    return [(now - b.taken_at).total_seconds() / 3600 for b in backups]


def test_no_rule_keeps_everything() -> None:
    assert expired(series(0, 1, 2), Retention()) == []


def test_keep_newest_n() -> None:
    assert hours(expired(series(0, 1, 2, 3, 4), Retention(keep=2))) == [4, 3, 2]


def test_the_backup_just_written_is_never_deleted() -> None:
    backups = series(0, 1, 2)
    oldest = backups[-1].name  # e.g. a backup whose clock was behind
    assert oldest not in {b.name for b in expired(backups, Retention(keep=1), protect=[oldest])}


def test_keep_daily_keeps_the_newest_of_each_of_the_last_days() -> None:
    # 12:00 today; 11:00, 02:00 today; 23:00 and 13:00 yesterday; 3 days ago; 4 days ago
    backups = series(0, 1, 10, 13, 23, 72, 96)
    gone = expired(backups, Retention(keep=1, daily=3))
    # kept: 0 (keep 1; also today's newest), yesterday's newest (13), 3 days ago (72)
    assert hours(gone) == [96, 23, 10, 1]


def test_keep_weekly_beyond_the_newest() -> None:
    days = [0, 1, 8, 9, 15, 30]
    backups = series(*(d * 24 for d in days))
    gone = expired(backups, Retention(keep=1, weekly=2))
    # 2026-12-03 is a Thursday: week 49 holds days 0 and 1; week 48 holds 8 and 9
    assert hours(gone) == [720, 360, 216, 24]


def test_rules_add_up() -> None:
    backups = series(0, 1, 2, 30, 200)
    gone = expired(backups, Retention(keep=2, daily=2, weekly=2))
    assert hours(gone) == [2]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq", "age"),
        ("  age1abc  ", "age"),
        ("ssh-ed25519 AAAAC3Nza ops@laptop", "ssh"),
        ("ssh-rsa AAAAB3Nza", "ssh"),
        ("ssh-ed25519", None),  # the type without the key
        ("ssh-dss AAAAB3Nza", None),
        ("AGE-SECRET-KEY-1ABC", None),  # an identity, not a recipient
        ("", None),
    ],
)
def test_recipient_kinds(text: str, kind: str | None) -> None:
    """One rule for the inventory's check and the age adapter's parse."""
    assert recipient_kind(text) == kind
