"""The checks `up` and `certs renew` make before they change a host: whose CA a host trusts
(a lost state dir) and whose data a host holds (another tool's data dir). Real local PKI in
tmp_path, facts built by hand: no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.adapters.pki import LocalPKI, pem_fingerprints
from orchestrator.core.cluster_view import ClusterView
from orchestrator.core.errors import SafetyRefusal
from orchestrator.core.facts import HostFacts
from orchestrator.core.ownership import Marker, ca_refusal
from orchestrator.core.planners.up import UpObserved, _foreign_data
from orchestrator.core.render import env_values
from orchestrator.engine.context import RunContext
from orchestrator.engine.phases import ca_trust_of
from orchestrator.ui import UI
from tests.unit.helpers import make_inventory

CA_PATH = "/etc/etcd/pki/ca.crt"
ENV_PATH = "/etc/etcd/etcd.env"


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    context = RunContext(make_inventory(tmp_path), UI())
    context.pki.ensure_ca(365)
    return context


def check_ca(
    ctx: RunContext, facts: dict[str, HostFacts], *, created_now: bool, data_checked: bool = False
) -> None:
    """The CA rule as `up` and `certs renew` meet it: whose CA each host trusts, read from
    its CA file against the state dir's real CAs, then `ownership.ca_refusal`."""
    refused = ca_refusal(
        {n: f.holds_cluster for n, f in facts.items()},
        ca_trust_of(ctx, facts),
        created_now=created_now,
        pki_dir=str(ctx.pki.ca_cert_path.parent),
        state_dir=str(ctx.inv.cluster.state_dir),
        data_checked=data_checked,
    )
    if refused:
        raise SafetyRefusal(refused)


def other_ca(tmp_path: Path) -> bytes:
    pki = LocalPKI(tmp_path / "elsewhere", "demo")
    pki.ensure_ca(365)
    return pki.ca_cert_path.read_bytes()


def host(ca: bytes | None, *, data: bool = True, env: str | None = None) -> HostFacts:
    facts = HostFacts(has_data=data)
    if ca is not None:
        facts.texts[CA_PATH] = ca.decode()
    if env is not None:
        facts.texts[ENV_PATH] = env
    return facts


def test_pem_fingerprints_of_a_bundle_and_of_garbage(ctx: RunContext, tmp_path: Path) -> None:
    ours, theirs = ctx.pki.ca_cert_path.read_bytes(), other_ca(tmp_path)
    assert len(pem_fingerprints(ours + theirs)) == 2
    assert pem_fingerprints(ours) < pem_fingerprints(ours + theirs)
    assert pem_fingerprints(b"not a cert") == set()


def test_hosts_that_trust_our_ca_pass(ctx: RunContext, tmp_path: Path) -> None:
    ours = ctx.pki.ca_cert_path.read_bytes()
    facts = {
        "etcd1": host(ours),
        "etcd2": host(ours + other_ca(tmp_path)),  # a bundle holding ours
        "etcd3": host(other_ca(tmp_path), data=False),  # nothing there to protect
    }
    check_ca(ctx, facts, created_now=False)
    check_ca(ctx, {"etcd1": host(None), "etcd2": host(b"garbage")}, created_now=True)


@pytest.mark.parametrize(
    ("created_now", "why"), [(True, "there was no CA in"), (False, "none of the CAs in")]
)
def test_every_host_with_data_trusting_another_ca_means_a_lost_state_dir(
    ctx: RunContext, tmp_path: Path, created_now: bool, why: str
) -> None:
    theirs = other_ca(tmp_path)
    facts = {"etcd1": host(theirs), "etcd2": host(theirs), "etcd3": host(None, data=False)}
    for data_checked in (False, True):
        with pytest.raises(SafetyRefusal) as refused:
            check_ca(ctx, facts, created_now=created_now, data_checked=data_checked)
        message = str(refused.value)
        assert message.startswith("hosts etcd1, etcd2 hold a cluster that trusts another CA")
        assert why in message and "restore the state dir" in message


def test_some_hosts_trusting_another_ca_hold_another_clusters_data(
    ctx: RunContext, tmp_path: Path
) -> None:
    """The state dir is this cluster's (the others trust it): `up` leaves those hosts to its
    data checks (--force moves their data aside); `certs renew` refuses them."""
    facts = {"etcd1": host(ctx.pki.ca_cert_path.read_bytes()), "etcd2": host(other_ca(tmp_path))}
    check_ca(ctx, facts, created_now=False, data_checked=True)
    with pytest.raises(SafetyRefusal) as refused:
        check_ca(ctx, facts, created_now=False)
    message = str(refused.value)
    assert message.startswith("hosts etcd2 hold data of a cluster that trusts another CA")
    assert "etcd-deploy up --force moves that data aside" in message


def test_a_host_that_missed_a_ca_rotation_still_counts_as_ours(ctx: RunContext) -> None:
    old = ctx.pki.ca_cert_path.read_bytes()
    ctx.pki.begin_ca_rotation(365)
    bundle = ctx.pki.bundle_path.read_bytes()
    ctx.pki.switch_to_next_ca()
    ctx.pki.end_ca_rotation()
    check_ca(ctx, {"etcd1": host(old), "etcd2": host(bundle)}, created_now=False)


def test_env_values() -> None:
    text = "# written by etcd-deploy\nETCD_NAME=etcd1\nETCD_INITIAL_CLUSTER=a=1,b=2\n\n"
    assert env_values(text) == {"ETCD_NAME": "etcd1", "ETCD_INITIAL_CLUSTER": "a=1,b=2"}


def test_data_without_an_env_of_ours_naming_the_host_is_foreign(
    ctx: RunContext, tmp_path: Path
) -> None:
    ours = ctx.pki.ca_cert_path.read_bytes()
    facts = {
        "etcd1": host(ours, env="ETCD_NAME=etcd1\n"),
        "etcd2": host(None),  # data, no etcd.env: another tool's
        "etcd3": host(ours, env="ETCD_NAME=lonely\n"),
        "etcd4": host(other_ca(tmp_path), env="ETCD_NAME=etcd4\n"),  # another cluster's
    }
    trust = {n: "ours" for n in facts} | {"etcd2": "none", "etcd4": "foreign"}

    def obs(view: ClusterView | None) -> UpObserved:
        return UpObserved(facts, view, "demo-1", trust, b"", {}, Marker("demo", "1"))

    names = ["etcd1", "etcd2", "etcd3", "etcd4"]
    assert _foreign_data(ctx.inv, obs(None), names) == ["etcd2", "etcd3", "etcd4"]
    facts["etcd2"].has_data = False
    assert _foreign_data(ctx.inv, obs(None), ["etcd2"]) == []
    # With a cluster answering, membership tells instead (see `_stale_members`).
    assert _foreign_data(ctx.inv, obs(ClusterView([])), ["etcd3"]) == []
