"""Where off-site backups live: a local folder or an S3-compatible object store (boto3).

Both stores publish an object only when it is complete: a folder writes `NAME.part`,
fsyncs and renames; S3 uploads in parts (multipart above 16 MiB) and the object exists only
once the upload completes (an upload that dies leaves no object). The endpoint and
credentials come from the standard chain (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, `AWS_REGION`/`AWS_DEFAULT_REGION`, ~/.aws), with
`[backup] endpoint_url`, `region` and `profile` of the inventory on top. No credential is
ever logged: botocore's own loggers are kept at WARNING (its DEBUG prints auth headers).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from orchestrator.adapters.age_crypto import Sink
from orchestrator.adapters.localfs import fsync_dir
from orchestrator.core.backup_catalog import BackupTarget
from orchestrator.core.errors import BackupStoreError

Progress = Callable[[int], None]
PART_SIZE = 16 * 1024 * 1024
_QUIET = ("botocore", "boto3", "s3transfer", "urllib3")


class Store(Protocol):
    """One destination's objects, by name (no folder or prefix in the names)."""

    where: str

    def names(self) -> list[str]: ...

    def put(self, name: str, src: IO[bytes], progress: Progress) -> None: ...

    def put_text(self, name: str, text: str) -> None: ...

    def get(self, name: str, dst: Sink, progress: Progress) -> None: ...

    def get_text(self, name: str) -> str: ...

    def delete(self, names: list[str]) -> None: ...


@dataclass(frozen=True)
class S3Settings:
    """[backup] overrides of the standard AWS chain (None: the chain decides)."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None


def open_store(target: BackupTarget, settings: S3Settings) -> Store:
    if target.is_s3:
        return S3Store(target, settings)
    return FolderStore(Path(target.prefix))


def _copy(src: IO[bytes], dst: Sink, progress: Progress) -> None:
    done = 0
    while chunk := src.read(1024 * 1024):
        dst.write(chunk)
        done += len(chunk)
        progress(done)


class _Tally:
    """boto3's transfer callback (bytes per call, from its worker threads) as a running
    total for a progress bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.done = 0
        self.lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self.lock:
            self.done += n
            self.progress(self.done)


class FolderStore:
    """Backups in a local folder (a mounted NAS, another disk): files 0600."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.where = str(folder)

    def _ensure(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise BackupStoreError(f"{self.folder}: cannot create it ({exc.strerror})") from None

    def names(self) -> list[str]:
        try:
            return sorted(p.name for p in self.folder.iterdir() if p.is_file())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BackupStoreError(f"{self.folder}: cannot list it ({exc.strerror})") from None

    def put(self, name: str, src: IO[bytes], progress: Progress) -> None:
        self._ensure()
        final = self.folder / name
        part = final.with_name(name + ".part")
        try:
            # never through a symlink left at the .part name (a killed run's file is reused)
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                _copy(src, out, progress)
                out.flush()
                os.fsync(out.fileno())
            os.replace(part, final)
            fsync_dir(self.folder)
        except OSError as exc:
            with contextlib.suppress(OSError):
                part.unlink()
            raise BackupStoreError(f"{final}: cannot write it ({exc.strerror or exc})") from None

    def put_text(self, name: str, text: str) -> None:
        self.put(name, io.BytesIO(text.encode()), lambda _n: None)

    def get(self, name: str, dst: Sink, progress: Progress) -> None:
        try:
            with open(self.folder / name, "rb") as src:
                _copy(src, dst, progress)
        except OSError as exc:
            raise BackupStoreError(
                f"{self.folder / name}: cannot read it ({exc.strerror or exc})"
            ) from None

    def get_text(self, name: str) -> str:
        try:
            return (self.folder / name).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise BackupStoreError(f"{self.folder / name}: cannot read it ({exc})") from None

    def delete(self, names: list[str]) -> None:
        for name in names:
            try:
                (self.folder / name).unlink(missing_ok=True)
            except OSError as exc:
                raise BackupStoreError(
                    f"{self.folder / name}: cannot delete it ({exc.strerror})"
                ) from None
        fsync_dir(self.folder)


class S3Store:
    """Backups under a prefix of an S3 bucket (AWS, MinIO, Ceph RGW, moto...)."""

    def __init__(self, target: BackupTarget, settings: S3Settings) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)
        self.bucket = target.bucket
        self.prefix = target.prefix
        self.where = target.url()
        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
            s3={"addressing_style": "path"} if settings.endpoint_url else {},
        )
        try:  # a bad profile, AWS_ENDPOINT_URL or region: one line, not a traceback
            session = boto3.session.Session(profile_name=settings.profile)
            region = (
                settings.region
                or os.environ.get("AWS_REGION")
                or session.region_name
                or "us-east-1"
            )
            self.client: Any = session.client(
                "s3", endpoint_url=settings.endpoint_url, region_name=region, config=config
            )
        except Exception as exc:
            raise BackupStoreError(f"{self.where}: cannot set up the S3 client ({exc})") from None
        self.transfer = TransferConfig(
            multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, max_concurrency=4
        )

    def _fail(self, what: str, exc: Exception) -> BackupStoreError:
        detail = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
        code = detail.get("Code") if isinstance(detail, dict) else None
        message = f"{code}: {detail.get('Message', '')}".strip(": ") if code else str(exc)
        return BackupStoreError(f"{self.where}: cannot {what} ({message})")

    def names(self) -> list[str]:
        out: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
            )
            for page in pages:
                out += [o["Key"][len(self.prefix) :] for o in page.get("Contents", [])]
        except Exception as exc:
            raise self._fail("list the backups", exc) from None
        return sorted(out)

    def put(self, name: str, src: IO[bytes], progress: Progress) -> None:
        advance = _Tally(progress)
        try:
            self.client.upload_fileobj(
                src, self.bucket, self.prefix + name, Config=self.transfer, Callback=advance
            )
        except Exception as exc:
            raise self._fail(f"upload {name}", exc) from None

    def put_text(self, name: str, text: str) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + name,
                Body=text.encode(),
                ContentType="application/json",
            )
        except Exception as exc:
            raise self._fail(f"upload {name}", exc) from None

    def get(self, name: str, dst: Sink, progress: Progress) -> None:
        advance = _Tally(progress)
        try:
            self.client.download_fileobj(
                self.bucket, self.prefix + name, dst, Config=self.transfer, Callback=advance
            )
        except Exception as exc:
            raise self._fail(f"download {name}", exc) from None

    def get_text(self, name: str) -> str:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"]
            return str(body.read().decode())
        except Exception as exc:
            raise self._fail(f"read {name}", exc) from None

    def delete(self, names: list[str]) -> None:
        for start in range(0, len(names), 1000):
            batch = [{"Key": self.prefix + n} for n in names[start : start + 1000]]
            try:
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except Exception as exc:
                raise self._fail("delete old backups", exc) from None
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise BackupStoreError(
                    f"{self.where}: cannot delete {first.get('Key')} ({first.get('Code')})"
                )
