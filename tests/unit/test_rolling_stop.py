"""The rolling engine's stop: when no member answers between two members, the failure says
what is done and what is untouched (etcd answers from canned data: no network)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.adapters.etcd_api import EtcdApiError
from orchestrator.core.cluster_view import Member
from orchestrator.core.errors import PhaseFailure
from orchestrator.core.inventory import Host, Inventory
from orchestrator.engine.rolling import roll
from tests.unit.helpers import make_inventory
from tests.unit.test_cluster_view import THREE, FakeClient, healthy_client


@dataclass
class GoesSilent(FakeClient):
    silent: bool = False

    def members(self, endpoints: list[str] | None = None) -> list[Member]:
        if self.silent:
            raise EtcdApiError("https://192.0.2.11:2379", "ReadTimeout", unreachable=True)
        return self.member_list


@dataclass
class Ctx:
    """What `roll` uses of a RunContext; the first "healthy and caught up" silences etcd."""

    inv: Inventory
    etcd: GoesSilent
    lines: list[str] = field(default_factory=list)

    def client(self) -> GoesSilent:
        return self.etcd

    @property
    def ui(self) -> Ctx:
        return self

    def info(self, phase: str, message: str) -> None:
        self.lines.append(f"[{phase}] {message}")
        if message == "healthy and caught up":
            self.etcd.silent = True

    warn = info

    def log(self, _level: str, phase: str, message: str) -> None:
        self.info(phase, message)


def test_no_member_answering_between_two_members_stops_the_roll_saying_where(
    tmp_path: Path,
) -> None:
    client = healthy_client(THREE)
    etcd = GoesSilent(client.member_list, client.statuses)
    ctx = Ctx(make_inventory(tmp_path), etcd)
    acted: list[str] = []

    def action(host: Host, _member: Member) -> None:
        acted.append(host.name)

    with pytest.raises(PhaseFailure) as stopped:
        roll(ctx, list(ctx.inv.hosts), action, phase="restart", describe="restart")  # type: ignore[arg-type]
    assert acted == ["etcd2"]  # a follower first; etcd1 is the leader
    message = str(stopped.value)
    assert "ReadTimeout" in message
    assert "stopped before the next member (no member answered); done: etcd2; " in message
    assert message.endswith("untouched: etcd1, etcd3")
