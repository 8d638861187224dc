"""`certs renew` and `certs rotate-ca` (pure): which leaf certs are issued again, and why,
from the leaves as read on this machine (`cert_rules.LeafSeen`), the inventory and a `now`
passed in; then what goes to the hosts.

Both are refused, before anything changes, when the hosts hold a cluster that trusts none of
the state dir's CAs (`ownership.ca_refusal`): certs of our CA would cut its members apart.

renew: [renew HOST] issue each leaf that is missing, unreadable, not from the current CA,
not as its profile wants (SANs, subject, usages), or inside the renew window (every leaf
without --within); the others are kept, and said so. -> [renew HOST] send each host its new
certs, all hosts at once (no restart: etcd reads them on its next TLS handshake) -> [renew
HOST] start etcd where it holds data but is not running (expired certs can have stopped it)
-> [renew HOST] check each member serves its new server/peer cert -> [renew] healthy.

rotate-ca (from the rotation's stage: "" none, "begun" new CA made, "switched" new CA
signs): [rotate-ca] healthy first -> make the new CA (stage "") -> [rotate-ca HOST] every
member trusts old and new CA (a restart: etcd reads its CA file at start only), one at a
time, leader last (stages "" and "begun") -> the new CA signs -> issue every leaf from it
(in stage "switched", those not yet from it) -> send them -> this machine's own client cert
-> check what each member serves -> healthy. With --finish (stage "switched" only): drop the
old CA from the bundle -> every member trusts the new CA alone (rolling restart) -> healthy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from orchestrator.core.cert_rules import (
    CLIENT_PROFILE,
    DEFAULT_RENEW_WITHIN_DAYS,
    SERVED_KINDS,
    LeafSeen,
    judge_leaf,
    leaf_profile,
    renew_window_days,
)
from orchestrator.core.cluster_view import ClusterView
from orchestrator.core.errors import UsageError
from orchestrator.core.facts import HostFacts
from orchestrator.core.inventory import Host, Inventory
from orchestrator.core.ownership import ca_refusal
from orchestrator.core.plan import Noop, Plan, Refusal, Step
from orchestrator.core.planners.rolling import members_of, rolling_steps
from orchestrator.core.render import HOST_CERT_KINDS

RENEW = "renew"
ROTATE = "rotate-ca"
TRUST_BOTH = "trust old and new CA (restart)"
TRUST_NEW = "trust only the new CA (restart)"
NO_ROTATION = "no CA rotation to finish: run etcd-deploy certs rotate-ca first"
NO_ORDER = "no member answered when planned: the order is chosen at each turn"


@dataclass(frozen=True)
class CertsObserved:
    """What the command read before planning.

    `leaves`: host -> kind -> its leaf on this machine, against the CA that signs now;
    `facts` and `trust` (host -> `ownership.ca_trust` verdict): the hosts in scope;
    `ca_created`: this run made the CA (renew, when the state dir had none); `stage`, `view`
    (None when no member answered) and `client` (this machine's own client cert): rotate-ca.
    """

    leaves: Mapping[str, Mapping[str, LeafSeen]]
    facts: Mapping[str, HostFacts]
    trust: Mapping[str, str]
    now: dt.datetime
    pki_dir: str = ""
    ca_created: bool = False
    stage: str = ""
    view: ClusterView | None = None
    client: LeafSeen | None = None


def _refusals(inv: Inventory, obs: CertsObserved) -> tuple[Refusal, ...]:
    why = ca_refusal(
        {n: f.holds_cluster for n, f in obs.facts.items()},
        obs.trust,
        created_now=obs.ca_created,
        pki_dir=obs.pki_dir,
        state_dir=str(inv.cluster.state_dir),
    )
    return (Refusal(None, why),) if why else ()


def _issue_step(phase: str, host: str, kind: str, why: str, ca: str) -> Step:
    return Step(
        phase,
        host,
        f"issue a new {kind} cert and key from the {ca} CA",
        why,
        kind="issue",
        args={"kind": kind},
    )


def _judged(
    inv: Inventory,
    obs: CertsObserved,
    hosts: Sequence[Host],
    *,
    phase: str,
    within: float,
    force: bool = False,
    ca: str = "local",
) -> tuple[list[Step], list[Noop]]:
    """An issue step for every leaf of `hosts` to be issued again, a no-op for each kept."""
    window = renew_window_days(within, inv.cluster.cert_days)
    steps: list[Step] = []
    noops: list[Noop] = []
    for host in hosts:
        for kind in HOST_CERT_KINDS:
            seen = obs.leaves[host.name][kind]
            keep, why = judge_leaf(seen, leaf_profile(host, kind), window, obs.now)
            if keep and not force:
                noops.append(Noop(host.name, f"{kind} cert kept: {why}"))
                continue
            if keep:
                why = f"no --within: every cert is issued again (this one {why})"
            steps.append(_issue_step(phase, host.name, kind, why, ca))
    return steps, noops


def _issued(steps: Sequence[Step]) -> dict[str, list[str]]:
    """host -> the kinds the issue steps give it, in plan order."""
    out: dict[str, list[str]] = {}
    for step in steps:
        if step.handler == "issue" and step.host:
            out.setdefault(step.host, []).append(step.args["kind"])
    return out


def _push_steps(phase: str, issued: Mapping[str, list[str]]) -> list[Step]:
    return [
        Step(
            phase,
            host,
            f"send its new {', '.join(kinds)} cert{'s' if len(kinds) > 1 else ''} and "
            f"key{'s' if len(kinds) > 1 else ''}",
            "no restart: etcd reads them on its next TLS handshake",
            kind="push",
            parallel=True,
            args={"kinds": tuple(kinds)},
        )
        for host, kinds in issued.items()
    ]


def _prove_step(phase: str, host: str, kinds: Sequence[str]) -> Step:
    ports = {"server": "client port", "peer": "peer port"}
    plural = "s" if len(kinds) > 1 else ""
    return Step(
        phase,
        host,
        f"check it serves the {' and '.join(kinds)} cert{plural} issued on this machine",
        "on its " + " and ".join(ports[k] for k in kinds),
        kind="prove",
        changes=False,
        args={"kinds": tuple(kinds)},
    )


def _healthy_step(phase: str, timeout: float, reason: str, *, reset_client: bool = False) -> Step:
    return Step(
        phase,
        None,
        "wait until the cluster is healthy",
        reason,
        kind="healthy",
        changes=False,
        args={"timeout": timeout, "reset_client": reset_client},
    )


# --------------------------------------------------------------------------- renew


def plan_renew(
    inv: Inventory, obs: CertsObserved, *, within: int | None, names: Sequence[str] = ()
) -> Plan:
    """`within`: renew what expires within that many days (None: every leaf); `names`:
    the hosts (empty: all); `obs.facts` holds theirs. Unknown names: UsageError."""
    command = "certs renew"
    hosts = [inv.host(n) for n in dict.fromkeys(names)] or list(inv.hosts)
    refusals = _refusals(inv, obs)
    if refusals:
        return Plan(command, refusals=refusals)
    issue, noops = _judged(inv, obs, hosts, phase=RENEW, within=within or 0, force=within is None)
    if not issue:
        return Plan(command, noops=tuple(noops))
    issued = _issued(issue)
    starts = [
        Step(
            RENEW,
            h.name,
            "start etcd",
            "it holds data but etcd is not running: expired certs can stop it",
            kind="start",
        )
        for h in hosts
        if obs.facts[h.name].has_data and not obs.facts[h.name].running
    ]
    proves = [
        _prove_step(RENEW, h.name, served)
        for h in hosts
        if obs.facts[h.name].has_data
        and (served := [k for k in issued.get(h.name, ()) if k in SERVED_KINDS])
    ]
    steps = [
        *issue,
        *_push_steps(RENEW, issued),
        *starts,
        *proves,
        _healthy_step(RENEW, 120, "every member with its new certs"),
    ]
    return Plan(command, steps=tuple(steps), noops=tuple(noops))


# --------------------------------------------------------------------------- rotate-ca


def _trust_steps(inv: Inventory, obs: CertsObserved, action: str) -> tuple[list[Step], list[Noop]]:
    """The CA file's roll-out: one member at a time, leader last (each restarts)."""
    names = [h.name for h in inv.hosts]
    if obs.view is None:
        steps = [
            Step(ROTATE, n, action, NO_ORDER, quorum_check=True, rolling=True, kind="trust")
            for n in names
        ]
        return steps, []
    members, noops = members_of(inv, obs.view, names)
    steps = rolling_steps(obs.view, members, phase=ROTATE, action=action)
    return [replace(s, kind="trust") for s in steps], noops


def _finish(inv: Inventory, obs: CertsObserved) -> Plan:
    if obs.stage != "switched":
        raise UsageError(NO_ROTATION)
    trust, noops = _trust_steps(inv, obs, TRUST_NEW)
    steps = [
        _healthy_step(ROTATE, 60, "before any change"),
        Step(
            ROTATE,
            None,
            "drop the old CA from the trust bundle on this machine",
            "every member's certs are from the new CA",
            kind="end-rotation",
        ),
        *trust,
        _healthy_step(ROTATE, 60, "trusting the new CA only", reset_client=True),
    ]
    return Plan("certs rotate-ca", steps=tuple(steps), noops=tuple(noops))


def _switch_steps(inv: Inventory, obs: CertsObserved) -> tuple[list[Step], list[Noop]]:
    """Up to the new CA signing: make it (stage ""), roll the old+new bundle out and switch
    (stages "" and "begun"); nothing once it signs already."""
    if obs.stage == "switched":
        return [], []
    steps = []
    if obs.stage == "":
        steps.append(
            Step(
                ROTATE,
                None,
                "make a new CA on this machine (its key never leaves it)",
                "the old CA signs on until every member trusts both",
                kind="new-ca",
            )
        )
    trust, noops = _trust_steps(inv, obs, TRUST_BOTH)
    steps += [
        *trust,
        Step(
            ROTATE,
            None,
            "sign with the new CA from now on (the old one kept as ca-previous)",
            "every member trusts both",
            kind="switch",
        ),
    ]
    return steps, noops


def _leaf_steps(inv: Inventory, obs: CertsObserved) -> tuple[list[Step], list[Noop]]:
    """Every leaf from the new CA: all of them before the switch; after it, those not yet
    (or not valid: the usual rule, with the cluster's renew window)."""
    if obs.stage == "switched":
        return _judged(
            inv, obs, inv.hosts, phase=ROTATE, within=inv.cluster.renew_within_days, ca="new"
        )
    steps = [
        _issue_step(ROTATE, h.name, kind, "signed by the old CA", "new")
        for h in inv.hosts
        for kind in HOST_CERT_KINDS
    ]
    return steps, []


def _client_step(inv: Inventory, obs: CertsObserved) -> list[Step]:
    """This machine's own client cert, from the new CA (unless it is already)."""
    why = "signed by the old CA"
    if obs.stage == "switched" and obs.client is not None:
        window = renew_window_days(DEFAULT_RENEW_WITHIN_DAYS, inv.cluster.cert_days)
        keep, why = judge_leaf(obs.client, CLIENT_PROFILE, window, obs.now)
        if keep:
            return []
    action = "issue this machine's own client cert (etcd-deploy-client) from the new CA"
    return [Step(ROTATE, None, action, why, kind="client-cert")]


def plan_rotate_ca(inv: Inventory, obs: CertsObserved, *, finish: bool = False) -> Plan:
    """`obs.stage`: where a rotation stands. --finish before the new CA signs: UsageError."""
    refusals = _refusals(inv, obs)
    if refusals:
        return Plan("certs rotate-ca", refusals=refusals)
    if finish:
        return _finish(inv, obs)
    switch, noops = _switch_steps(inv, obs)
    issue, kept = _leaf_steps(inv, obs)
    steps = [
        _healthy_step(ROTATE, 60, "before any change"),
        *switch,
        *issue,
        *_push_steps(ROTATE, _issued(issue)),
        *_client_step(inv, obs),
        *(_prove_step(ROTATE, h.name, SERVED_KINDS) for h in inv.hosts),
        _healthy_step(ROTATE, 60, "every member with certs of the new CA"),
    ]
    return Plan("certs rotate-ca", steps=tuple(steps), noops=(*noops, *kept))
