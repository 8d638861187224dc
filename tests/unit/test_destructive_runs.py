"""destroy, restore and backup schedule as commands, with the hosts faked: a dry run reads
without locks and changes nothing, a refused run lets its locks go before anything runs,
and destroy keeps the local state when a host kept its data dir. No network."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.transport import CommandResult, HostResult
from orchestrator.commands import backup, destroy, restore
from orchestrator.core.errors import EXIT_CHANGES_PENDING, SafetyRefusal
from orchestrator.core.etcd_unit import STOP_IF_RUNNING
from orchestrator.core.facts import HostFacts
from orchestrator.core.host_lock import LockOwner
from orchestrator.engine.context import RunContext
from orchestrator.ui import UI
from tests.unit.helpers import make_inventory
from tests.unit.identity_facts import host

SNAPSHOT = Path(__file__).parent / "data" / "etcd-3.5.1-snapshot.db"


@dataclass
class Conn:
    name: str
    log: list[str]  # every host's scripts, in the order they ran
    said: str = ""
    scripts: list[str] = field(default_factory=list)

    def run(self, script: str, **_kw: Any) -> CommandResult:
        self.scripts.append(script)
        self.log.append(f"{self.name}: {script}")
        return CommandResult(script, 0, self.said, "")


class Pool:
    def __init__(self, names: list[str]) -> None:
        self.log: list[str] = []
        self.connections = {n: Conn(n, self.log) for n in names}

    def __getitem__(self, name: str) -> Conn:
        return self.connections[name]

    def map(self, fn: Any, names: Any) -> dict[str, HostResult[Any]]:
        out: dict[str, HostResult[Any]] = {}
        for name in names:
            try:
                out[name] = HostResult(name, value=fn(self.connections[name]))
            except Exception as exc:
                out[name] = HostResult(name, error=exc)
        return out

    def close(self) -> None:
        pass


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    context = RunContext(make_inventory(tmp_path), UI())
    context._pool = Pool([h.name for h in context.inv.hosts])  # type: ignore[assignment]
    return context


def conns(ctx: RunContext) -> dict[str, Conn]:
    return ctx.pool.connections  # type: ignore[return-value]


@pytest.fixture
def locks(ctx: RunContext, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Fakes the locked read (every host a member of ours) and records what is let go; a
    dry run must call neither."""
    seen: dict[str, Any] = {"facts": {h.name: host(ctx.inv, h.name) for h in ctx.inv.hosts}}

    def lock_and_read(_ctx: RunContext, command: str, names: list[str]) -> Any:
        seen["locked"] = command
        return LockOwner.__new__(LockOwner), {n: seen["facts"][n] for n in names}

    def release(_ctx: RunContext, _owner: Any, names: Any) -> None:
        seen["released"] = list(names)

    def unlocked(_ctx: RunContext, names: list[str]) -> dict[str, HostFacts]:
        seen["read"] = True
        return {n: seen["facts"][n] for n in names}

    for module in (destroy, restore):
        monkeypatch.setattr(module, "lock_and_read", lock_and_read)
        monkeypatch.setattr(module, "release_locks", release)
        monkeypatch.setattr(module, "read_unlocked", unlocked)
    monkeypatch.setattr(restore, "status_of_snapshot", lambda _ctx, _path: None)
    return seen


def test_destroy_dry_run_reads_without_locks_and_runs_nothing(
    ctx: RunContext, locks: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code = destroy.run_destroy(ctx, purge_state=True, dry_run=True)
    assert code == EXIT_CHANGES_PENDING and locks["read"] and "locked" not in locks
    out = capsys.readouterr().out.splitlines()
    assert [line.split("]")[0] for line in out] == [
        "[destroy etcd1",
        "[destroy etcd2",
        "[destroy etcd3",
        "[state",
    ]
    assert not any(c.scripts for c in conns(ctx).values())


def test_destroy_refused_lets_the_locks_go_and_touches_nothing(
    ctx: RunContext, locks: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    locks["facts"]["etcd2"] = host(ctx.inv, "etcd2", data="foreign")
    with pytest.raises(SafetyRefusal, match=r"destroy refused: etcd2: .* belongs to cluster"):
        destroy.run_destroy(ctx, purge_state=False)
    assert locks["released"] == ["etcd1", "etcd2", "etcd3"]
    assert not any(c.scripts for c in conns(ctx).values())
    assert destroy.run_destroy(ctx, purge_state=False, dry_run=True) == 5
    assert "refused: destroy refused: etcd2" in capsys.readouterr().err


def test_destroy_keeps_the_local_state_when_a_host_kept_its_data(
    ctx: RunContext, locks: dict[str, Any]
) -> None:
    ctx.pki.ensure_ca(365)
    conns(ctx)["etcd2"].said = "kept /var/lib/etcd: it carries no marker of this cluster\n"
    assert destroy.run_destroy(ctx, purge_state=True) == 0
    assert all("systemctl disable --now etcd.service" in c.scripts[0] for c in conns(ctx).values())
    assert ctx.pki.ca_cert_path.exists()  # the plan said "remove"; the host said "kept"
    conns(ctx)["etcd2"].said = "removed /var/lib/etcd\n"
    assert destroy.run_destroy(ctx, purge_state=True) == 0
    assert not ctx.pki.ca_cert_path.exists()


def test_restore_without_yes_is_its_dry_run(
    ctx: RunContext, locks: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code = restore.run_restore(ctx, SNAPSHOT, yes=False)
    assert code == EXIT_CHANGES_PENDING and "locked" not in locks
    captured = capsys.readouterr()
    assert captured.out.startswith("[verify] etcd-3.5.1-snapshot.db: sha256 ")
    assert "add --yes to do it" in captured.err
    assert "[aside etcd3] move /var/lib/etcd aside" in captured.out
    assert not any(c.scripts for c in conns(ctx).values())
    assert restore.run_restore(ctx, SNAPSHOT, yes=True, dry_run=True, as_json=True) == 10
    assert '"command": "restore"' in capsys.readouterr().out


def test_from_snapshot_onto_a_running_cluster_is_refused_before_anything(
    ctx: RunContext, locks: dict[str, Any]
) -> None:
    with pytest.raises(SafetyRefusal, match="--from-snapshot makes a brand-new cluster"):
        restore.run_restore(ctx, SNAPSHOT, yes=True, fresh_only=True)
    assert locks["locked"] == "restore" and locks["released"] == ["etcd1", "etcd2", "etcd3"]
    assert not any(c.scripts for c in conns(ctx).values())
    assert not ctx.pki.ca_cert_path.exists()  # refused before the certs step


def test_schedule_dry_run_connects_to_nothing(
    ctx: RunContext, capsys: pytest.CaptureFixture[str]
) -> None:
    code = backup.run_schedule(ctx, every="6h", keep=3, off=False, dry_run=True)
    assert code == EXIT_CHANGES_PENDING
    out = capsys.readouterr().out
    assert out.count("[schedule etcd") == 3 and "[record] record the schedule in" in out
    assert not any(c.scripts for c in conns(ctx).values())
    assert not (ctx.inv.cluster.state_dir / backup.SCHEDULE_FILE).exists()


def test_restore_runs_its_plan_in_the_safety_order(
    ctx: RunContext, locks: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step's handler, with the engine faked: on every host the snapshot arrives and
    is restored before any host stops etcd; the old data goes aside after that."""
    events: list[str] = []
    monkeypatch.setattr(restore, "issue_certs", lambda _ctx: {h.name: {} for h in ctx.inv.hosts})
    monkeypatch.setattr(
        restore,
        "gather_facts",
        lambda _ctx, _owner, paths, names: {n: locks["facts"][n] for n in names},
    )
    monkeypatch.setattr(
        restore, "fetch_one_release", lambda _ctx, arch: events.append(f"release {arch}")
    )
    monkeypatch.setattr(
        restore,
        "install_host",
        lambda _ctx, conn, _plan, _release: events.append(f"install {conn.name}"),
    )
    monkeypatch.setattr(
        restore,
        "start_new_cluster",
        lambda _ctx, hosts: events.append("start") or {h.name: HostResult(h.name) for h in hosts},
    )
    monkeypatch.setattr(restore, "wait_healthy", lambda _client, timeout: events.append("healthy"))

    class Client:
        def count_keys(self, _endpoint: str) -> tuple[int, int]:
            return 3, 7

    monkeypatch.setattr(ctx, "client", lambda: Client())
    monkeypatch.setattr(ctx.pki, "trust_pem", lambda: b"")
    for conn in conns(ctx).values():
        conn.said = "/var/lib/etcd.before-restore-1\n"
    assert restore.run_restore(ctx, SNAPSHOT, yes=True) == 0
    assert locks["released"] == ["etcd1", "etcd2", "etcd3"]
    assert events == [
        "release x86_64",
        "install etcd1",
        "install etcd2",
        "install etcd3",
        "start",
        "healthy",
    ]
    log: list[str] = ctx.pool.log  # type: ignore[attr-defined]
    staged = [i for i, line in enumerate(log) if "snapshot restore" in line]
    stopped = [i for i, line in enumerate(log) if line.endswith(STOP_IF_RUNNING)]
    moved = [i for i, line in enumerate(log) if "mountpoint -q" in line]
    assert len(staged) == len(stopped) == len(moved) == 3
    assert max(staged) < min(stopped) and max(stopped) < min(moved)
