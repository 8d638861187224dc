"""Off-site backups on a real S3-compatible server (moto's standalone server over HTTP):
encrypted with age on the control machine, every refusal before any host changes, the
cluster destroyed and restored from the URL, retention over a series of backups, and no
credential in any log."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pyrage import x25519

from tests.e2e.conftest import Cli, unit_started_at
from tests.e2e.load import put_keys, read_prefix
from tests.lab.driver import HOSTS, Lab
from tests.lab.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

THREE = ["etcd1", "etcd2", "etcd3"]
BUCKET = "etcd-backups"
IN_REGION = {"LocationConstraint": REGION}


def _identity(folder: Path, name: str) -> tuple[Path, str]:
    """A fresh age identity file (0600) and its recipient."""
    identity = x25519.Identity.generate()
    path = folder / f"{name}.txt"
    path.write_text(f"# {name}\n{identity}\n")
    os.chmod(path, 0o600)
    return path, str(identity.to_public())


def _no_secrets(text: str) -> None:
    assert ACCESS_KEY not in text and SECRET_KEY not in text


def _started(lab: Lab) -> dict[str, str]:
    return {name: unit_started_at(lab, name) for name in THREE}


def test_encrypted_backup_to_s3_destroy_restore_from_the_url(
    make_cli, lab: Lab, s3_server: S3Server, tmp_path: Path
) -> None:
    base = make_cli(3)
    cli = Cli(base.inventory, dict(base.env, **s3_server.env()))
    cli("up", check=True)
    pki = cli.inventory.parent / ".etcd-deploy" / "lab" / "pki"
    endpoint = f"https://{HOSTS['etcd1']}:2379"
    put_keys(endpoint, pki, 300, prefix="/offsite/")
    before = read_prefix(endpoint, pki, "/offsite/")
    s3 = s3_server.client()
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration=IN_REGION)
    identity, recipient = _identity(tmp_path, "ops")
    url = f"s3://{BUCKET}/lab/"

    taken = cli("backup", "--to", url, "--encrypt-to", recipient, "--json", "-v")
    assert taken.returncode == 0, taken.stderr
    _no_secrets(taken.stdout + taken.stderr)
    result = json.loads(taken.stdout)
    manifest = result["manifest"]
    assert manifest["encrypted"] and manifest["keys"] >= 300 and manifest["members"] == 3
    assert result["url"] == url + manifest["object"] and manifest["object"].endswith(".db.age")
    # What the store holds is age, not a snapshot: no bbolt header without the identity.
    stored = s3.get_object(Bucket=BUCKET, Key="lab/" + manifest["object"])["Body"].read()
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert len(stored) == manifest["size"] and b"/offsite/" not in stored
    assert stored[16:20] != bytes.fromhex("edda0ced")

    listed = cli("backup", "list", "--to", url, "--json", "--log-format", "json")
    assert listed.returncode == 0, listed.stderr
    _no_secrets(listed.stdout + listed.stderr)
    (entry,) = json.loads(listed.stdout)["backups"]
    assert entry["complete"] and entry["encrypted"] and entry["name"] == manifest["object"]

    # Refusals before any host changes: a wrong identity, a truncated object, a manifest
    # that does not match. Exit 8; every member still runs, untouched.
    started = _started(lab)
    other, _ = _identity(tmp_path, "someone-else")
    wrong = cli("restore", result["url"], "--identity", str(other), "--yes")
    assert wrong.returncode == 8 and "none of the --identity keys" in wrong.stderr, wrong.stderr
    name = manifest["object"]
    truncated = name.replace("-r", "-r1", 1)
    s3.put_object(Bucket=BUCKET, Key="lab/" + truncated, Body=stored[: len(stored) // 2])
    s3.put_object(
        Bucket=BUCKET,
        Key=f"lab/{truncated}.json",
        Body=json.dumps(dict(manifest, object=truncated)).replace("\n", ""),
    )
    cut = cli("restore", url + truncated, "--identity", str(identity), "--yes")
    assert cut.returncode == 8 and "bytes downloaded" in cut.stderr, cut.stderr
    s3.put_object(Bucket=BUCKET, Key="lab/" + truncated, Body=stored)
    s3.put_object(
        Bucket=BUCKET,
        Key=f"lab/{truncated}.json",
        Body=json.dumps(dict(manifest, object=truncated, plain_sha256="0" * 64)),
    )
    mismatch = cli("restore", url + truncated, "--identity", str(identity), "--yes")
    assert mismatch.returncode == 8 and "the manifest says" in mismatch.stderr, mismatch.stderr
    assert _started(lab) == started
    assert cli.status()["healthy"]
    s3.delete_objects(
        Bucket=BUCKET,
        Delete={"Objects": [{"Key": f"lab/{truncated}"}, {"Key": f"lab/{truncated}.json"}]},
    )

    # Every etcd host lost: the backup comes back from the store alone.
    cli("destroy", "--yes", check=True)
    restored = cli("restore", url, "--identity", str(identity), "--yes", "-v")
    assert restored.returncode == 0, restored.stderr
    _no_secrets(restored.stdout + restored.stderr)
    assert "matches its manifest and etcd's own hash" in restored.stderr
    assert read_prefix(endpoint, pki, "/offsite/") == before
    staging = cli.inventory.parent / ".etcd-deploy" / "lab" / "staging"
    assert not any(staging.rglob("*.db*"))  # no snapshot left in clear on this machine


def test_retention_keeps_exactly_what_the_rules_say(
    make_cli, s3_server: S3Server, tmp_path: Path
) -> None:
    """A series of backups to a folder with --keep 2 and to S3 with no recipient (a warning
    line each time), listed newest first."""
    base = make_cli(1)
    cli = Cli(base.inventory, dict(base.env, **s3_server.env()))
    cli("up", check=True)
    s3 = s3_server.client()
    s3.create_bucket(
        Bucket="retention", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    names = []
    for _ in range(4):
        proc = cli("backup", "--to", "s3://retention/x/", "--keep", "2", "--json")
        assert proc.returncode == 0, proc.stderr
        assert "in clear" in proc.stderr
        names.append(json.loads(proc.stdout)["manifest"]["object"])
    listed = json.loads(cli("backup", "list", "--to", "s3://retention/x/", "--json").stdout)
    assert [b["name"] for b in listed["backups"]] == [names[3], names[2]]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="retention")["Contents"])
    assert keys == sorted([f"x/{n}" for n in names[2:]] + [f"x/{n}.json" for n in names[2:]])

    folder = tmp_path / "nas"
    for _ in range(3):
        proc = cli("backup", "--to", str(folder), "--keep", "1")
        assert proc.returncode == 0, proc.stderr
        assert "in clear" not in proc.stderr  # a local folder is not an object store
    left = sorted(p.name for p in folder.iterdir())
    assert len(left) == 2 and left[1] == left[0] + ".json"
    assert oct(folder.joinpath(left[0]).stat().st_mode & 0o777) == "0o600"
