"""`certs renew --dry-run`: which leaves would be re-issued and why, with nothing written
(local PKI in tmp_path; no host is contacted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.commands.certs import run_renew
from orchestrator.core.errors import EXIT_CHANGES_PENDING, UsageError
from orchestrator.engine.context import RunContext
from orchestrator.ui import UI
from tests.unit.helpers import make_inventory


def _files(pki_dir: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(pki_dir.rglob("*")) if p.is_file()}


def test_renew_dry_run_says_what_and_why_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = RunContext(make_inventory(tmp_path), UI())
    with pytest.raises(UsageError, match=r"no CA in .*: nothing to renew"):
        run_renew(ctx, within=30, names=[], dry_run=True)
    ctx.pki.ensure_ca(365)
    for host in ctx.inv.hosts[:2]:
        ctx.pki.ensure_host_certs(ctx.inv, host)
    before = _files(ctx.pki.pki_dir)

    assert run_renew(ctx, within=30, names=["etcd1"], dry_run=True) == 0
    out = capsys.readouterr().out
    assert out.count("[renew etcd1]") == 4 and "reused: valid until" in out
    assert "etcd2" not in out

    assert run_renew(ctx, within=30, names=[], dry_run=True) == EXIT_CHANGES_PENDING
    out = capsys.readouterr().out
    assert out.count("[renew etcd3]") == 4 and "would re-issue: new" in out
    assert "[renew etcd1] server: reused" in out

    assert run_renew(ctx, within=None, names=["etcd2"], dry_run=True) == EXIT_CHANGES_PENDING
    assert capsys.readouterr().out.count("would re-issue: forced") == 4
    assert _files(ctx.pki.pki_dir) == before
    assert not ctx.ssh_used
