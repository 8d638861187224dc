"""`certs renew --dry-run`: the plan (which leaves would be issued again and why), with
nothing issued or written (local PKI in tmp_path; the hosts' facts come from a stand-in for
the unlocked read, so no host is contacted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.commands import certs
from orchestrator.commands.certs import run_renew
from orchestrator.core.errors import EXIT_CHANGES_PENDING, UsageError
from orchestrator.core.facts import HostFacts
from orchestrator.core.host_plan import DesiredFile
from orchestrator.core.plan import Plan
from orchestrator.core.planners.certs import plan_renew
from orchestrator.core.render import pki_paths
from orchestrator.engine.context import RunContext
from orchestrator.ui import UI
from tests.unit.helpers import make_inventory


def _files(pki_dir: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(pki_dir.rglob("*")) if p.is_file()}


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunContext:
    """Every host runs a member that trusts the local CA (read without a lock, no SSH)."""
    ctx = RunContext(make_inventory(tmp_path), UI())
    read: list[list[str]] = []

    def read_unlocked(
        ctx: RunContext, names: list[str], files: dict[str, list[DesiredFile]]
    ) -> dict[str, HostFacts]:
        read.append(names)
        ca = ctx.pki.ca_cert_pem().decode()
        texts = {pki_paths(ctx.inv)["ca.crt"]: ca}
        return {n: HostFacts(active_state="active", has_data=True, texts=texts) for n in names}

    monkeypatch.setattr(certs, "read_unlocked", read_unlocked)
    return ctx


def test_renew_dry_run_says_what_and_why_and_writes_nothing(
    ctx: RunContext, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UsageError, match=r"no CA in .*: nothing to renew"):
        run_renew(ctx, within=30, names=[], dry_run=True)
    ctx.pki.ensure_ca(365)
    for host in ctx.inv.hosts[:2]:
        ctx.pki.ensure_host_certs(ctx.inv, host)
    before = _files(ctx.pki.pki_dir)

    assert run_renew(ctx, within=30, names=["etcd1"], dry_run=True) == 0
    out = capsys.readouterr().out
    assert out.count("etcd1: no changes (") == 4 and "server cert kept: valid until" in out
    assert "[renew" not in out and "etcd2" not in out

    assert run_renew(ctx, within=30, names=[], dry_run=True) == EXIT_CHANGES_PENDING
    out = capsys.readouterr().out
    assert "[renew etcd3] issue a new server cert and key from the local CA (new)" in out
    assert out.count("[renew etcd3] issue a new") == 4
    assert "[renew etcd3] send its new server, peer, etcdctl-etcd-client" in out
    assert "[renew etcd3] check it serves the server and peer certs issued" in out
    assert "etcd1: = server cert kept: valid until" not in out  # no step for etcd1...
    assert "etcd1: no changes (server cert kept: valid until" in out  # ...only what is kept
    assert "[renew etcd1]" not in out

    assert run_renew(ctx, within=None, names=["etcd2"], dry_run=True) == EXIT_CHANGES_PENDING
    out = capsys.readouterr().out
    assert out.count("(no --within: every cert is issued again (this one valid until") == 4

    assert run_renew(ctx, within=30, names=[], dry_run=True, as_json=True) == 10
    data = json.loads(capsys.readouterr().out)
    assert data["command"] == "certs renew" and data["exit_code"] == 10
    issued = [(s["host"], s["action"]) for s in data["steps"] if s["action"].startswith("issue")]
    assert [h for h, _ in issued] == ["etcd3"] * 4

    assert _files(ctx.pki.pki_dir) == before  # nothing issued, nothing written
    assert not ctx.ssh_used


def test_the_issue_steps_write_what_was_planned_and_then_nothing_is_due(ctx: RunContext) -> None:
    """The planner's judgement (from the leaves as read here) and the issuing agree: once the
    issue steps ran, planning again finds every leaf kept."""
    ctx.pki.ensure_ca(365)
    ctx.pki.ensure_host_certs(ctx.inv, ctx.inv.hosts[0])
    hosts = list(ctx.inv.hosts)
    names = [h.name for h in hosts]

    def plan() -> Plan:
        facts = certs.read_unlocked(ctx, names, {})
        return plan_renew(ctx.inv, certs._observed(ctx, hosts, facts), within=30)

    first = plan()
    steps = [s for s in first.steps if s.handler == "issue"]
    assert {s.host for s in steps} == {"etcd2", "etcd3"} and len(steps) == 8
    before = _files(ctx.pki.pki_dir)
    handlers = certs._Handlers(ctx)
    for step in steps:
        handlers.issue(step, None)  # type: ignore[arg-type]
    written = {p for p, data in _files(ctx.pki.pki_dir).items() if before.get(p) != data}
    assert len(written) == 16 and not any("/etcd1/" in p for p in written)
    assert set(handlers.issued) == {"etcd2", "etcd3"}
    again = plan()
    assert not again.changes and len(again.noops) == 12
