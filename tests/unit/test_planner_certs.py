"""`certs renew` and `certs rotate-ca` planners, from data: the leaves as read on this machine
(`LeafSeen`), the hosts' facts, whose CA they trust, the rotation's stage and the cluster
view in; steps, no-ops and refusals out. No network, no files, no clock (`NOW` is given)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.cert_rules import (
    CLIENT_PROFILE,
    SERVED_KINDS,
    LeafProfile,
    LeafSeen,
    judge_leaf,
    leaf_profile,
)
from orchestrator.core.errors import UsageError
from orchestrator.core.facts import HostFacts
from orchestrator.core.inventory import Inventory
from orchestrator.core.plan import Plan
from orchestrator.core.planners.certs import (
    NO_ORDER,
    NO_ROTATION,
    TRUST_BOTH,
    TRUST_NEW,
    CertsObserved,
    plan_renew,
    plan_rotate_ca,
)
from orchestrator.core.planners.rolling import NOT_A_MEMBER
from orchestrator.core.render import HOST_CERT_KINDS
from tests.unit.helpers import make_inventory
from tests.unit.views import view

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
PKI = "/state/pki"
ALL = ("etcd1", "etcd2", "etcd3")


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return make_inventory(tmp_path)


def good(profile: LeafProfile, days: float = 200, **changes: Any) -> LeafSeen:
    """A leaf that fits `profile`, `days` from expiry at NOW, then `changes`."""
    seen = LeafSeen(
        subject_cn=(profile.cn,),
        subject_o=profile.orgs,
        usages=profile.usages,
        dns_sans=profile.dns,
        ip_sans=profile.ips,
        not_after=NOW + dt.timedelta(days=days),
    )
    return replace(seen, **changes)


def leaves(
    inv: Inventory, changed: Mapping[tuple[str, str], LeafSeen] | None = None, days: float = 200
) -> dict[str, dict[str, LeafSeen]]:
    """Every leaf of every host good for `days`; `changed`: (host, kind) -> another one."""
    out: dict[str, dict[str, LeafSeen]] = {}
    for host in inv.hosts:
        out[host.name] = {}
        for kind in HOST_CERT_KINDS:
            seen = (changed or {}).get((host.name, kind))
            out[host.name][kind] = seen or good(leaf_profile(host, kind), days)
    return out


def member(running: bool = True, data: bool = True) -> HostFacts:
    return HostFacts(active_state="active" if running else "failed", has_data=data)


def observed(
    inv: Inventory,
    *,
    changed: Mapping[tuple[str, str], LeafSeen] | None = None,
    days: float = 200,
    facts: Mapping[str, HostFacts] | None = None,
    trust: Mapping[str, str] | None = None,
    **more: Any,
) -> CertsObserved:
    names = [h.name for h in inv.hosts]
    return CertsObserved(
        leaves=leaves(inv, changed, days),
        facts={n: member() for n in names} | dict(facts or {}),
        trust={n: "ours" for n in names} | dict(trust or {}),
        now=NOW,
        pki_dir=PKI,
        **more,
    )


def rows(plan: Plan) -> list[tuple[str, str | None, str]]:
    return [(s.phase, s.host, s.handler) for s in plan.steps]


def issued(plan: Plan) -> list[tuple[str | None, str, str]]:
    return [(s.host, s.args["kind"], s.reason) for s in plan.steps if s.handler == "issue"]


# --------------------------------------------------------------------------- the leaf rule


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"present": False}, "new"),
        ({"unreadable": "ValueError"}, "existing files unreadable (ValueError)"),
        ({"by_current_ca": False}, "not signed by current CA"),
        ({"key_matches": False}, "key does not match certificate"),
        ({"subject_cn": ("etcd9",)}, "subject changed"),
        ({"subject_o": ("system:masters",)}, "subject changed"),
        ({"usages": ("1.3.6.1.5.5.7.3.2",)}, "extended key usage changed"),
        ({"ip_sans": frozenset({"127.0.0.1", "::1"})}, "SANs changed (+IP 192.0.2.11)"),
        ({"dns_sans": frozenset({"etcd1", "localhost", "old"})}, "SANs changed (-DNS old)"),
        ({"not_after": NOW - dt.timedelta(hours=1)}, "expired on 2026-06-01"),
        ({"not_after": NOW + dt.timedelta(days=10)}, "expires in 10 days (renew window 30)"),
        ({"not_after": NOW + dt.timedelta(hours=12)}, "expires in 0.5 days (renew window 30)"),
    ],
)
def test_why_a_leaf_is_issued_again(inv: Inventory, change: dict[str, Any], why: str) -> None:
    profile = leaf_profile(inv.hosts[0], "server")
    seen = good(profile, **change)
    assert judge_leaf(seen, profile, 30, NOW) == (False, why)


def test_a_leaf_that_fits_is_kept(inv: Inventory) -> None:
    server = leaf_profile(inv.hosts[0], "server")
    assert judge_leaf(good(server), server, 30, NOW) == (
        True,
        "valid until 2026-12-18, SANs match",
    )
    client = leaf_profile(inv.hosts[0], "etcdctl-etcd-client")
    assert judge_leaf(good(client), client, 30, NOW)[1].endswith(", no SANs")
    assert judge_leaf(good(CLIENT_PROFILE), CLIENT_PROFILE, 30, NOW)[0]


# --------------------------------------------------------------------------- renew


def test_renew_with_nothing_due_has_no_step(inv: Inventory) -> None:
    plan = plan_renew(inv, observed(inv), within=30)
    assert plan.steps == () and not plan.changes and plan.exit_code == 0
    assert len(plan.noops) == 12
    assert plan.noops[0].host == "etcd1"
    assert plan.noops[0].reason == "server cert kept: valid until 2026-12-18, SANs match"


def test_renew_issues_what_is_due_then_pushes_then_proves(inv: Inventory) -> None:
    soon = NOW + dt.timedelta(days=5)
    changed = {
        ("etcd1", "server"): good(leaf_profile(inv.hosts[0], "server"), not_after=soon),
        ("etcd2", "etcdctl-etcd-client"): LeafSeen(present=False),
    }
    plan = plan_renew(inv, observed(inv, changed=changed), within=30)
    assert rows(plan) == [
        ("renew", "etcd1", "issue"),
        ("renew", "etcd2", "issue"),
        ("renew", "etcd1", "push"),
        ("renew", "etcd2", "push"),
        ("renew", "etcd1", "prove"),  # etcd2 got a client cert only: nothing served changes
        ("renew", None, "healthy"),
    ]
    assert issued(plan) == [
        ("etcd1", "server", "expires in 5 days (renew window 30)"),
        ("etcd2", "etcdctl-etcd-client", "new"),
    ]
    pushes = [s for s in plan.steps if s.handler == "push"]
    assert all(s.parallel and s.changes for s in pushes)
    assert pushes[0].args["kinds"] == ("server",)
    prove = plan.steps[4]
    assert prove.args["kinds"] == ("server",) and not prove.changes
    assert plan.steps[-1].args == {"timeout": 120, "reset_client": False}
    assert len(plan.noops) == 10 and plan.exit_code == 10
    assert plan.lines()[:6] == [
        "[renew etcd1] issue a new server cert and key from the local CA "
        "(expires in 5 days (renew window 30))",
        "[renew etcd2] issue a new etcdctl-etcd-client cert and key from the local CA (new)",
        "[renew etcd1] send its new server cert and key "
        "(no restart: etcd reads them on its next TLS handshake)",
        "[renew etcd2] send its new etcdctl-etcd-client cert and key "
        "(no restart: etcd reads them on its next TLS handshake)",
        "[renew etcd1] check it serves the server cert issued on this machine (on its client port)",
        "[renew] wait until the cluster is healthy (every member with its new certs)",
    ]
    assert plan.lines()[6] == "etcd1: = peer cert kept: valid until 2026-12-18, SANs match"
    json.dumps(plan.as_data())  # what --dry-run --json prints


def test_renew_window_is_at_most_half_the_validity(inv: Inventory) -> None:
    short = replace(inv, cluster=replace(inv.cluster, cert_days=1))
    plan = plan_renew(short, observed(short, days=0.6), within=30)
    assert plan.steps == ()  # 0.6 days left of 1: above the window of 0.5
    plan = plan_renew(short, observed(short, days=0.4), within=30)
    assert issued(plan)[0] == ("etcd1", "server", "expires in 0.4 days (renew window 0.5)")


def test_renew_without_within_issues_every_leaf(inv: Inventory) -> None:
    plan = plan_renew(inv, observed(inv), within=None)
    assert len(issued(plan)) == 12 and not plan.noops
    assert issued(plan)[0][2] == (
        "no --within: every cert is issued again (this one valid until 2026-12-18, SANs match)"
    )
    assert [s.host for s in plan.steps if s.handler == "prove"] == list(ALL)


def test_renew_of_named_hosts_only(inv: Inventory) -> None:
    plan = plan_renew(inv, observed(inv), within=None, names=["etcd2", "etcd2"])
    assert {s.host for s in plan.steps} == {"etcd2", None}
    assert len(issued(plan)) == 4
    with pytest.raises(UsageError, match="no host named 'etcd9'"):
        plan_renew(inv, observed(inv), within=None, names=["etcd9"])


def test_renew_starts_members_that_hold_data_but_do_not_run(inv: Inventory) -> None:
    facts = {"etcd2": member(running=False), "etcd3": member(running=False, data=False)}
    plan = plan_renew(inv, observed(inv, days=-1, facts=facts), within=30)
    assert issued(plan)[0][2] == "expired on 2026-05-31"
    starts = [s for s in plan.steps if s.handler == "start"]
    assert [s.host for s in starts] == ["etcd2"]  # etcd3 has no data: nothing to start
    assert starts[0].reason == "it holds data but etcd is not running: expired certs can stop it"
    # a host without data serves nothing to check
    assert [s.host for s in plan.steps if s.handler == "prove"] == ["etcd1", "etcd2"]
    handlers = [s.handler for s in plan.steps]
    assert handlers.index("start") > max(i for i, h in enumerate(handlers) if h == "push")


@pytest.mark.parametrize(
    ("trust", "created", "why"),
    [
        (
            dict.fromkeys(ALL, "foreign"),
            False,
            f"hosts etcd1, etcd2, etcd3 hold a cluster that trusts another CA, and none of the "
            f"CAs in {PKI} is it: restore the state dir",
        ),
        (
            dict.fromkeys(ALL, "foreign"),
            True,
            "hosts etcd1, etcd2, etcd3 hold a cluster that trusts another CA, and there was no "
            f"CA in {PKI}: restore the state dir",
        ),
        (
            {"etcd3": "foreign"},
            False,
            "hosts etcd3 hold data of a cluster that trusts another CA (the others trust this "
            "state dir's CA); etcd-deploy up --force moves that data aside",
        ),
    ],
)
def test_renew_is_refused_when_the_hosts_trust_another_ca(
    inv: Inventory, trust: dict[str, str], created: bool, why: str
) -> None:
    plan = plan_renew(inv, observed(inv, trust=trust, ca_created=created), within=None)
    assert plan.steps == () and plan.exit_code == 5
    assert plan.refusals[0].reason.startswith(why)
    error = plan.refusal_error()
    assert error is not None and str(error).endswith("; nothing was changed")


def test_hosts_that_hold_nothing_are_not_judged_by_their_ca(inv: Inventory) -> None:
    facts = {n: member(running=False, data=False) for n in ALL}
    trust = dict.fromkeys(ALL, "foreign")
    plan = plan_renew(inv, observed(inv, facts=facts, trust=trust), within=None)
    assert not plan.refusals and len(issued(plan)) == 12


# --------------------------------------------------------------------------- rotate-ca


def rotation(inv: Inventory, stage: str = "", **more: Any) -> CertsObserved:
    more.setdefault("view", view(inv, leader="etcd1"))
    return observed(inv, stage=stage, client=good(CLIENT_PROFILE), **more)


def test_rotate_ca_from_the_start(inv: Inventory) -> None:
    plan = plan_rotate_ca(inv, rotation(inv))
    assert rows(plan) == [
        ("rotate-ca", None, "healthy"),
        ("rotate-ca", None, "new-ca"),
        ("rotate-ca", "etcd2", "trust"),
        ("rotate-ca", "etcd3", "trust"),
        ("rotate-ca", "etcd1", "trust"),  # the leader last
        ("rotate-ca", None, "switch"),
        *[("rotate-ca", n, "issue") for n in ALL for _ in HOST_CERT_KINDS],
        *[("rotate-ca", n, "push") for n in ALL],
        ("rotate-ca", None, "client-cert"),
        *[("rotate-ca", n, "prove") for n in ALL],
        ("rotate-ca", None, "healthy"),
    ]
    trust = [s for s in plan.steps if s.handler == "trust"]
    assert all(s.rolling and s.quorum_check and s.action == TRUST_BOTH for s in trust)
    assert {r for _, _, r in issued(plan)} == {"signed by the old CA"}
    assert all(s.args["kinds"] == SERVED_KINDS for s in plan.steps if s.handler == "prove")
    assert plan.exit_code == 10 and not plan.noops
    lines = plan.lines()
    assert lines[:7] == [
        "[rotate-ca] wait until the cluster is healthy (before any change)",
        "[rotate-ca] make a new CA on this machine (its key never leaves it) "
        "(the old CA signs on until every member trusts both)",
        "[rotate-ca etcd2] trust old and new CA (restart) [quorum]",
        "[rotate-ca etcd3] trust old and new CA (restart) [quorum]",
        "[rotate-ca etcd1] trust old and new CA (restart) "
        "(leader: leadership handed over first) [quorum]",
        "[rotate-ca] sign with the new CA from now on (the old one kept as ca-previous) "
        "(every member trusts both)",
        "[rotate-ca etcd1] issue a new server cert and key from the new CA (signed by the old CA)",
    ]
    assert (
        "[rotate-ca] issue this machine's own client cert (etcd-deploy-client) from the "
        "new CA (signed by the old CA)" in lines
    )
    assert lines[-1] == (
        "[rotate-ca] wait until the cluster is healthy (every member with certs of the new CA)"
    )
    json.dumps(plan.as_data())


def test_rotate_ca_once_the_new_ca_is_made(inv: Inventory) -> None:
    plan = plan_rotate_ca(inv, rotation(inv, "begun"))
    handlers = [s.handler for s in plan.steps]
    assert "new-ca" not in handlers and handlers.count("trust") == 3
    assert handlers.index("switch") > max(i for i, h in enumerate(handlers) if h == "trust")
    assert len(issued(plan)) == 12


def test_rotate_ca_once_the_new_ca_signs_issues_what_is_not_from_it(inv: Inventory) -> None:
    old = {
        ("etcd2", kind): good(leaf_profile(inv.hosts[1], kind), by_current_ca=False)
        for kind in HOST_CERT_KINDS
    }
    plan = plan_rotate_ca(inv, rotation(inv, "switched", changed=old))
    assert rows(plan) == [
        ("rotate-ca", None, "healthy"),
        *[("rotate-ca", "etcd2", "issue") for _ in HOST_CERT_KINDS],
        ("rotate-ca", "etcd2", "push"),
        *[("rotate-ca", n, "prove") for n in ALL],  # every member: what it serves now
        ("rotate-ca", None, "healthy"),
    ]  # this machine's client cert is from the new CA already: no step for it
    assert {r for _, _, r in issued(plan)} == {"not signed by current CA"}
    assert len(plan.noops) == 8 and plan.noops[0].reason.startswith("server cert kept: valid")


def test_rotate_ca_once_the_new_ca_signs_renews_our_client_cert_when_not_from_it(
    inv: Inventory,
) -> None:
    client = good(CLIENT_PROFILE, by_current_ca=False)
    obs = replace(rotation(inv, "switched"), client=client)
    plan = plan_rotate_ca(inv, obs)
    step = next(s for s in plan.steps if s.handler == "client-cert")
    assert step.reason == "not signed by current CA"


def test_rotate_ca_finish(inv: Inventory) -> None:
    plan = plan_rotate_ca(inv, rotation(inv, "switched"), finish=True)
    assert rows(plan) == [
        ("rotate-ca", None, "healthy"),
        ("rotate-ca", None, "end-rotation"),
        ("rotate-ca", "etcd2", "trust"),
        ("rotate-ca", "etcd3", "trust"),
        ("rotate-ca", "etcd1", "trust"),
        ("rotate-ca", None, "healthy"),
    ]
    assert all(s.action == TRUST_NEW for s in plan.steps if s.handler == "trust")
    assert plan.steps[-1].args["reset_client"]  # the client trusts the new CA alone
    assert plan.exit_code == 10


@pytest.mark.parametrize("stage", ["", "begun"])
def test_rotate_ca_finish_before_the_new_ca_signs_is_a_usage_error(
    inv: Inventory, stage: str
) -> None:
    with pytest.raises(UsageError, match=NO_ROTATION):
        plan_rotate_ca(inv, rotation(inv, stage), finish=True)


def test_rotate_ca_leaves_non_members_out_of_the_roll(inv: Inventory) -> None:
    plan = plan_rotate_ca(inv, rotation(inv, view=view(inv, members=["etcd1", "etcd2"])))
    assert [s.host for s in plan.steps if s.handler == "trust"] == ["etcd2", "etcd1"]
    assert [(n.host, n.reason) for n in plan.noops] == [("etcd3", NOT_A_MEMBER)]
    # its certs are still issued and sent, as every host's
    assert [s.host for s in plan.steps if s.handler == "push"] == list(ALL)


def test_rotate_ca_takes_an_unhealthy_member_first(inv: Inventory) -> None:
    plan = plan_rotate_ca(inv, rotation(inv, view=view(inv, leader="etcd1", down={"etcd3"})))
    trust = [s for s in plan.steps if s.handler == "trust"]
    assert [s.host for s in trust] == ["etcd3", "etcd2", "etcd1"]
    assert trust[0].reason.startswith("not healthy (connection refused): first")


def test_rotate_ca_when_no_member_answers(inv: Inventory) -> None:
    plan = plan_rotate_ca(inv, rotation(inv, view=None))
    trust = [s for s in plan.steps if s.handler == "trust"]
    assert [s.host for s in trust] == list(ALL)
    assert all(s.reason == NO_ORDER and s.rolling for s in trust)
    assert plan.steps[0].handler == "healthy"  # which waits for the cluster first


@pytest.mark.parametrize("finish", [False, True])
def test_rotate_ca_is_refused_when_the_hosts_trust_another_ca(inv: Inventory, finish: bool) -> None:
    obs = rotation(inv, "", trust=dict.fromkeys(ALL, "foreign"))
    plan = plan_rotate_ca(inv, obs, finish=finish)  # refused before --finish's stage check
    assert plan.steps == () and plan.exit_code == 5
    assert "hold a cluster that trusts another CA, and none of the CAs in" in (
        plan.refusals[0].reason
    )
