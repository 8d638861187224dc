"""ClusterView: leader agreement, the health gate and the wording of its problems; plus
`observe`/`wait_healthy` driven by a fake client (no network)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from orchestrator.adapters.etcd_api import EtcdApiError
from orchestrator.core.cluster_view import ClusterView, Member, MemberStatus
from orchestrator.core.errors import ClusterUnhealthy
from orchestrator.engine.cluster import observe, wait_healthy


def member(n: int, *, learner: bool = False, started: bool = True) -> Member:
    ip = f"192.0.2.{10 + n}"
    return Member(
        id=n,
        name=f"etcd{n}" if started else "",
        peer_urls=(f"https://{ip}:2380",),
        client_urls=(f"https://{ip}:2379",) if started else (),
        is_learner=learner,
    )


def status(n: int, leader: int = 1, *, errors: tuple[str, ...] = ()) -> MemberStatus:
    return MemberStatus(
        endpoint=f"https://192.0.2.{10 + n}:2379",
        member_id=n,
        leader_id=leader,
        version="3.5.17",
        db_size=20480,
        db_size_in_use=16384,
        raft_term=2,
        raft_index=100,
        raft_applied_index=100,
        revision=7,
        is_learner=False,
        errors=errors,
        cluster_id=99,
    )


def view_of(
    members: list[Member],
    leaders: dict[int, int] | None = None,
    *,
    errors: dict[int, str] | None = None,
    alarms: list[tuple[int, str]] | None = None,
) -> ClusterView:
    """`leaders`: member id -> the leader it reports (default: every member says 1)."""
    if leaders is None:
        leaders = {m.id: 1 for m in members if m.started}
    return ClusterView(
        members,
        {i: status(i, leader) for i, leader in leaders.items()},
        dict(errors or {}),
        list(alarms or []),
    )


THREE = [member(1), member(2), member(3)]


def test_healthy_cluster() -> None:
    view = view_of(THREE)
    assert view.leader_id == 1
    assert view.healthy
    assert view.problems() == []
    assert view.healthy_voters == 3
    assert all(view.is_healthy_member(m.id) for m in THREE)


@pytest.mark.parametrize(
    ("leaders", "agreed"),
    [
        ({1: 2, 2: 2, 3: 2}, 2),
        ({1: 1, 2: 1, 3: 2}, None),  # disagreement
        ({1: 0, 2: 0, 3: 0}, None),  # nobody knows a leader
        ({1: 0, 2: 1, 3: 1}, None),
        ({1: 3}, 3),  # only one answers: it is trusted
        ({}, None),  # nobody answers
    ],
)
def test_leader_agreement(leaders: dict[int, int], agreed: int | None) -> None:
    view = view_of(THREE, leaders)
    assert view.leader_id == agreed
    if agreed is None:
        assert not view.healthy


def test_disagreement_is_a_problem() -> None:
    view = view_of(THREE, {1: 1, 2: 1, 3: 3})
    assert not view.healthy
    assert view.problems() == ["no agreed leader"]


def test_an_error_makes_the_cluster_unhealthy() -> None:
    view = view_of(THREE, errors={2: "unhealthy: no leader"})
    assert view.leader_id == 1
    assert not view.healthy
    assert not view.is_healthy_member(2)
    assert view.healthy_voters == 2
    assert view.problems() == ["etcd2: unhealthy: no leader"]


def test_a_silent_member_is_not_answering() -> None:
    view = view_of(THREE, {1: 1, 2: 1})
    assert not view.healthy
    assert view.problems() == ["etcd3: not answering"]


def test_nobody_answering_lists_each_member_but_no_leader_problem() -> None:
    view = view_of(THREE, {})
    assert view.problems() == [
        "etcd1: not answering",
        "etcd2: not answering",
        "etcd3: not answering",
    ]


def test_unstarted_member() -> None:
    unstarted = member(0xABC, learner=True, started=False)
    assert not unstarted.started
    view = view_of([*THREE, unstarted], errors={0xABC: "added but never started"})
    assert not view.healthy
    assert view.problems() == ["abc (not started): added but never started"]
    assert view.healthy_voters == 3


def test_error_for_an_unknown_member_is_labelled_by_hex_id() -> None:
    view = view_of(THREE, errors={0xFF: "gone"})
    assert view.problems() == ["ff: gone"]


@pytest.mark.parametrize(
    ("alarms", "problems"),
    [
        ([(1, "NOSPACE")], ["alarm NOSPACE on etcd1"]),
        (
            [(2, "CORRUPT"), (0xDEAD, "NOSPACE")],
            ["alarm CORRUPT on etcd2", "alarm NOSPACE on dead"],
        ),
    ],
)
def test_alarms_make_the_cluster_unhealthy(
    alarms: list[tuple[int, str]], problems: list[str]
) -> None:
    view = view_of(THREE, alarms=alarms)
    assert view.leader_id == 1
    assert not view.healthy
    assert view.problems() == problems


def test_problems_order_errors_silence_leader_alarms() -> None:
    view = view_of(THREE, {1: 1, 3: 2}, errors={1: "boom"}, alarms=[(3, "NOSPACE")])
    assert view.problems() == [
        "etcd1: boom",
        "etcd2: not answering",
        "no agreed leader",
        "alarm NOSPACE on etcd3",
    ]


def test_learners_count_for_health_but_not_as_voters() -> None:
    learner = member(4, learner=True)
    view = view_of([*THREE, learner])
    assert view.voters == THREE
    assert view.learners == [learner]
    assert view.healthy
    assert view.healthy_voters == 3  # the healthy learner is not a voter

    sick = view_of([*THREE, learner], errors={4: "too far behind"})
    assert sick.healthy_voters == 3
    assert not sick.healthy  # every member must be healthy, learners included


def test_by_peer_url() -> None:
    view = view_of(THREE)
    assert view.by_peer_url("https://192.0.2.12:2380") == THREE[1]
    assert view.by_peer_url("https://192.0.2.99:2380") is None
    assert view.by_peer_url("https://192.0.2.12:2379") is None  # a client URL is not a peer URL


# --------------------------------------------------------------------------- observe


@dataclass
class FakeClient:
    """Answers like EtcdClient from canned data."""

    member_list: list[Member]
    statuses: dict[str, MemberStatus | EtcdApiError] = field(default_factory=dict)
    health_of: dict[str, tuple[bool, str]] = field(default_factory=dict)
    alarm_list: list[tuple[int, str]] | EtcdApiError = field(default_factory=list)
    health_calls: list[str] = field(default_factory=list)

    def members(self, endpoints: list[str] | None = None) -> list[Member]:
        return self.member_list

    def status(self, endpoint: str, timeout: float | None = None) -> MemberStatus:
        answer = self.statuses[endpoint]
        if isinstance(answer, EtcdApiError):
            raise answer
        return answer

    def health(self, endpoint: str, timeout: float | None = None) -> tuple[bool, str]:
        self.health_calls.append(endpoint)
        return self.health_of.get(endpoint, (True, ""))

    def alarms(self, endpoints: list[str] | None = None) -> list[tuple[int, str]]:
        if isinstance(self.alarm_list, EtcdApiError):
            raise self.alarm_list
        return self.alarm_list


def healthy_client(members: list[Member]) -> FakeClient:
    return FakeClient(members, {m.client_urls[0]: status(m.id) for m in members if m.started})


def test_observe_healthy() -> None:
    client = healthy_client(THREE)
    view = observe(client)  # type: ignore[arg-type]
    assert view.healthy
    assert set(view.statuses) == {1, 2, 3}
    assert sorted(client.health_calls) == sorted(m.client_urls[0] for m in THREE)


def test_observe_records_why_members_are_unhealthy() -> None:
    learner = member(4, learner=True)
    unstarted = member(5, learner=True, started=False)
    members = [*THREE, learner, unstarted]
    client = healthy_client(members)
    client.statuses[THREE[1].client_urls[0]] = EtcdApiError(
        THREE[1].client_urls[0], "ConnectError: refused", unreachable=True
    )
    client.statuses[THREE[2].client_urls[0]] = status(3, errors=("NOSPACE", "corrupt"))
    client.health_of[THREE[0].client_urls[0]] = (False, "RAFT NO LEADER")
    view = observe(client)  # type: ignore[arg-type]
    assert view.errors == {
        1: "unhealthy: RAFT NO LEADER",
        2: "ConnectError: refused",
        3: "NOSPACE; corrupt",
        5: "added but never started",
    }
    assert learner.client_urls[0] not in client.health_calls  # learners skip /health
    assert not view.healthy


def test_observe_tolerates_alarm_errors_and_reports_alarms() -> None:
    client = healthy_client(THREE)
    client.alarm_list = EtcdApiError("x", "timeout")
    assert observe(client).alarms == []  # type: ignore[arg-type]
    client.alarm_list = [(2, "NOSPACE")]
    assert observe(client).problems() == ["alarm NOSPACE on etcd2"]  # type: ignore[arg-type]


def test_wait_healthy_returns_a_healthy_view() -> None:
    view = wait_healthy(healthy_client(THREE), timeout=0)  # type: ignore[arg-type]
    assert view.healthy


def test_wait_healthy_names_the_problems_when_it_gives_up() -> None:
    client = healthy_client(THREE)
    client.statuses[THREE[2].client_urls[0]] = status(3, leader=3)
    with pytest.raises(ClusterUnhealthy, match="cluster not healthy after 0 s: no agreed leader"):
        wait_healthy(client, timeout=0)  # type: ignore[arg-type]


def test_a_joining_member_can_be_left_out_of_the_gate() -> None:
    joining = member(4, learner=True)
    client = healthy_client(THREE)
    client.member_list = [*THREE, joining]
    client.statuses[joining.client_urls[0]] = EtcdApiError(
        joining.client_urls[0], "ConnectError", unreachable=True
    )
    with pytest.raises(ClusterUnhealthy, match="etcd4: ConnectError"):
        wait_healthy(client, timeout=0)  # type: ignore[arg-type]
    view = wait_healthy(client, timeout=0, ignore={4})  # type: ignore[arg-type]
    assert not view.healthy and view.healthy_ignoring({4})


def test_a_tolerated_alarm_leaves_the_gate_open_and_others_do_not() -> None:
    """While NOSPACE is raised, every member's status lists it and /health fails with
    "ALARM NOSPACE"; defrag, which is there to clear it, tolerates exactly that."""
    client = healthy_client(THREE)
    client.alarm_list = [(2, "NOSPACE")]
    for m in THREE:
        client.statuses[m.client_urls[0]] = status(m.id, errors=("memberID:2 alarm:NOSPACE ",))
        client.health_of[m.client_urls[0]] = (False, "ALARM NOSPACE")
    assert not observe(client).healthy  # type: ignore[arg-type]
    view = wait_healthy(client, timeout=0, tolerate=("NOSPACE",))  # type: ignore[arg-type]
    assert view.healthy and view.problems() == ["alarm NOSPACE on etcd2"]
    client.alarm_list = [(2, "NOSPACE"), (3, "CORRUPT")]
    assert not observe(client, tolerate=("NOSPACE",)).healthy  # type: ignore[arg-type]
    client.alarm_list = [(2, "NOSPACE")]
    client.health_of[THREE[0].client_urls[0]] = (False, "RAFT NO LEADER")
    view = observe(client, tolerate=("NOSPACE",))  # type: ignore[arg-type]
    assert view.errors == {1: "unhealthy: RAFT NO LEADER"}
