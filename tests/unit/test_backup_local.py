"""`backup` on the control machine: under the state dir's lock, a new name every time (two
backups in one millisecond included), the `.part` created with O_EXCL. The cluster is faked:
its snapshot is a real etcd snapshot file (see data/README.md)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import pytest

from orchestrator.adapters.lock import StateLock
from orchestrator.adapters.snapshot import list_local, verify_integrity
from orchestrator.commands import backup
from orchestrator.core.errors import SafetyRefusal
from orchestrator.core.host_lock import LockOwner
from tests.unit.helpers import NoPreflight, make_inventory

REAL = Path(__file__).parent / "data" / "etcd-3.5.1-snapshot.db"
FROZEN = datetime(2024, 5, 6, 10, 30, 45, 123456, tzinfo=UTC)


@dataclass
class Member:
    id: int
    name: str
    client_urls: list[str]


class View:
    voters: ClassVar[list[Member]] = [Member(1, "etcd1", ["https://192.0.2.11:2379"])]
    leader_id = 1

    def is_healthy_member(self, _member_id: int) -> bool:
        return True

    def problems(self) -> list[str]:
        return []


class Client:
    def count_keys(self, _endpoint: str) -> tuple[int, int]:
        return 3, 7

    def snapshot(self, _endpoint: str, out: BinaryIO, progress: Any = None) -> int:
        data = REAL.read_bytes()
        out.write(data)
        return len(data)


class UI:
    def info(self, *_args: object) -> None:
        pass

    def warn(self, *_args: object) -> None:
        pass

    def progress(self, *_args: object) -> Any:
        import contextlib

        return contextlib.nullcontext(lambda _n: None)


class PKI:
    def require_ca(self) -> None:
        pass

    def cluster_id(self, create: bool = True) -> str:
        del create
        return "3f2a9c1d"


@dataclass
class Ctx:
    inv: Any
    state_lock: StateLock
    ui: UI = field(default_factory=UI)
    pki: PKI = field(default_factory=PKI)
    owners: list[LockOwner] = field(default_factory=list)

    def lock_state(self, owner: LockOwner) -> None:
        self.owners.append(owner)
        self.state_lock.acquire(owner)

    def client(self) -> Client:
        return Client()

    def links(self) -> NoPreflight:
        return NoPreflight()


class Frozen(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> Frozen:  # type: ignore[override]
        return cls.fromtimestamp(FROZEN.timestamp(), tz)


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ctx:
    inv = make_inventory(tmp_path)
    monkeypatch.setattr(backup, "observe", lambda _client: View())
    monkeypatch.setattr(backup, "status_of_snapshot", lambda _ctx, _path: None)
    monkeypatch.setattr(backup, "datetime", Frozen)
    return Ctx(inv, StateLock(inv.cluster.state_dir))


def test_two_backups_in_one_millisecond_never_share_a_name(ctx: Ctx, tmp_path: Path) -> None:
    out = tmp_path / "backups"
    first = backup.run_backup(ctx, out_dir=out, keep=None)  # type: ignore[arg-type]
    second = backup.run_backup(ctx, out_dir=out, keep=None)  # type: ignore[arg-type]
    assert Path(first.file).name == "demo-20240506T103045.123Z.db"
    assert Path(second.file).name == "demo-20240506T103045.123Z-2.db"
    for result in (first, second):
        assert verify_integrity(Path(result.file)) == result.sha256
        assert os.stat(result.file).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in out.iterdir()) == sorted(
        Path(r.file).name for r in (first, second)
    )  # no .part left
    assert [b.path for b in list_local(out, "demo")] == [Path(second.file), Path(first.file)]
    assert [o.command for o in ctx.owners] == ["backup", "backup"]
    assert ctx.state_lock.held


def test_backup_refused_while_another_run_holds_the_state_lock(ctx: Ctx, tmp_path: Path) -> None:
    state = ctx.inv.cluster.state_dir
    state.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
            " fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(state / ".etcd-deploy.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        out = tmp_path / "backups"
        with pytest.raises(SafetyRefusal, match="locked by another etcd-deploy run"):
            backup.run_backup(ctx, out_dir=out, keep=None)  # type: ignore[arg-type]
        assert not out.exists()  # refused before anything was made
    finally:
        holder.kill()
        holder.wait()


def test_a_failed_snapshot_leaves_no_part(
    ctx: Ctx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_self: Client, _endpoint: str, out: BinaryIO, progress: Any = None) -> int:
        out.write(b"half a snapshot")
        raise OSError("connection reset")

    monkeypatch.setattr(Client, "snapshot", broken)
    out = tmp_path / "backups"
    with pytest.raises(OSError, match="connection reset"):
        backup.run_backup(ctx, out_dir=out, keep=None)  # type: ignore[arg-type]
    assert list(out.iterdir()) == []


def test_schedule_record_is_written_atomically(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[tuple[Path, bytes, int | None]] = []
    monkeypatch.setattr(backup, "write_atomic", lambda p, d, m=None: writes.append((p, d, m)))
    from contextlib import nullcontext

    monkeypatch.setattr(backup, "locked_hosts", lambda *_a, **_k: nullcontext({}))

    class Pool:
        def map(self, _fn: Any, _names: Any) -> dict[str, Any]:
            return {}

    ctx.pool = Pool()  # type: ignore[attr-defined]
    backup.run_schedule(ctx, every="30m", keep=5, off=False)  # type: ignore[arg-type]
    ((path, data, mode),) = writes
    assert path == ctx.inv.cluster.state_dir / backup.SCHEDULE_FILE
    assert b'"every": "30m"' in data and mode == 0o600
