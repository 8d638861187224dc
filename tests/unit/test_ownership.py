"""Whose folder is it: markers, the adopt/remove verdicts, a host's identity, member
matching, the teardown's marker guard (run for real on tmp_path) and the state dir purge."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.adapters.state_dir import purge_state_dir
from orchestrator.core.cluster_view import ClusterView, Member
from orchestrator.core.facts import parse_folder
from orchestrator.core.ownership import (
    DirFacts,
    FolderRule,
    HostIdentity,
    Marker,
    Ownership,
    ca_trust,
    env_is_ours,
    identity_problems,
    judge,
    parse_marker,
)
from orchestrator.engine.operations import _remove_marked_lines, aside_lines

OURS = Marker("demo", "00c0ffee00c0ffee")
DATA = FolderRule("cluster.data_dir")
CONFIG = FolderRule("cluster.config_dir", frozenset({"etcdctl.env", "pki"}))
NONE: frozenset[str] = frozenset()
MEMBER = frozenset({"member"})
ENV = frozenset({"etcd.env"})


def test_marker_round_trip_and_garbage() -> None:
    assert parse_marker(OURS.render()) == OURS
    assert parse_marker("etcd-deploy cluster=demo") is None
    assert parse_marker("hello") is None


@pytest.mark.parametrize(
    ("facts", "rule", "proven", "state", "reason"),
    [
        (DirFacts(), DATA, NONE, "adoptable", "does not exist yet"),
        (DirFacts(True), DATA, NONE, "adoptable", "empty"),
        (DirFacts(True, OURS.render()), DATA, NONE, "ours", "marked"),
        (DirFacts(True, OURS.render(), ("member",)), DATA, NONE, "ours", "marked"),
        (DirFacts(True, Marker("prod", "1").render()), DATA, NONE, "foreign", "'prod'"),
        (DirFacts(True, Marker("demo", "1").render()), DATA, NONE, "foreign", "id 1"),
        (DirFacts(True, "junk"), DATA, NONE, "unknown", "not a marker"),
        (DirFacts(True, None, ("notes",)), DATA, NONE, "unknown", "holds notes"),
        (DirFacts(True, None, ("member",)), DATA, MEMBER, "adoptable", "only what"),
        (DirFacts(True, None, ("member",)), DATA, NONE, "unknown", "holds member"),
        (DirFacts(True, None, ("etcd.env", "pki")), CONFIG, ENV, "adoptable", "only what"),
        (DirFacts(True, None, ("etcd.env", "pki")), CONFIG, NONE, "unknown", "holds etcd.env"),
        (DirFacts(True, None, ("etcdctl.env", "pki")), CONFIG, NONE, "adoptable", "only what"),
        (DirFacts(True, None, ("sshd_config",)), CONFIG, NONE, "unknown", "sshd_config"),
        (DirFacts(True, None, (), True), DATA, NONE, "adoptable", "empty"),  # a mount point
    ],
)
def test_judge(
    facts: DirFacts, rule: FolderRule, proven: frozenset[str], state: str, reason: str
) -> None:
    verdict = judge("/x", facts, rule, OURS, proven=proven)
    assert verdict.state == state
    assert reason in verdict.reason


def test_a_state_dir_without_an_id_checks_the_name_only() -> None:
    legacy = Marker("demo", "")
    assert judge("/x", DirFacts(True, OURS.render()), DATA, legacy).state == "ours"
    assert judge("/x", DirFacts(True, Marker("b", "1").render()), DATA, legacy).state == "foreign"


def test_only_ours_may_be_removed_and_written() -> None:
    assert Ownership("ours").may_remove and Ownership("ours").may_write
    assert Ownership("adoptable").may_write and not Ownership("adoptable").may_remove
    for state in ("foreign", "unknown"):
        assert not Ownership(state).may_write and not Ownership(state).may_remove


def test_folder_facts_leave_out_what_says_nothing_about_whose() -> None:
    lines = [
        "exists",
        "mount",
        "marker " + OURS.render().strip(),
        "entry lost+found",
        "entry .etcd-deploy",
        "entry .etcd-deploy-aside-20261203",
        "entry .etcd-deploy-restore-demo-1",
        "entry etcd.env.etcd-deploy-new",
        "entry member",
    ]
    facts = parse_folder(lines)
    assert facts == DirFacts(True, OURS.render().strip(), ("member",), True)
    assert parse_folder([]) == DirFacts()


def who(**kw: object) -> HostIdentity:
    base: dict[str, object] = {
        "holds_cluster": True,
        "env": {},
        "ca": "ours",
        "data": Ownership("ours"),
        "config": Ownership("ours"),
    }
    return HostIdentity(**(base | kw))  # type: ignore[arg-type]


PEER = "https://10.0.0.2:2380"
TOKEN = "demo-0123456789ab"


@pytest.mark.parametrize(
    ("identity", "problem"),
    [
        (who(), None),
        (who(ca="none", holds_cluster=False), None),
        (who(ca="foreign"), "trusts another CA"),
        (who(ca="foreign", holds_cluster=False), None),
        (who(ca="unknown"), None),  # our marker on its data proves it
        (who(ca="unknown", data=Ownership("unknown", "x")), "nothing proves"),
        (who(ca="none", data=Ownership("adoptable")), "nothing proves"),  # another tool's etcd
        (who(ca="none", data=Ownership("adoptable"), holds_cluster=False), None),
        (who(data=Ownership("unknown", "x")), None),  # a CA of ours proves it; data kept
        (who(env={"ETCD_INITIAL_CLUSTER_TOKEN": "prod-abc"}), "token 'prod-abc'"),
        (who(env={"ETCD_INITIAL_CLUSTER_TOKEN": "demo-eu-0123456789ab"}), "token"),
        (who(env={"ETCD_INITIAL_CLUSTER_TOKEN": TOKEN, "ETCD_NAME": "etcd2"}), None),
        (who(config=Ownership("unknown", "/etc/etcd holds sshd_config")), "sshd_config"),
        (who(data=Ownership("link", "/var/lib/etcd is a symlink")), "symlink"),
        (who(links=("/etc/etcd/etcd.env",)), "/etc/etcd/etcd.env is a symlink"),
        (who(env={"ETCD_NAME": "etcd9"}), "names member 'etcd9'"),
        (who(env={"ETCD_INITIAL_ADVERTISE_PEER_URLS": "https://10.0.0.9:2380"}), "advertises"),
        (who(env={"ETCD_INITIAL_ADVERTISE_PEER_URLS": PEER}), None),
        (who(data=Ownership("foreign", "/var/lib/etcd belongs to cluster 'b'")), "cluster 'b'"),
    ],
)
def test_identity_problems(identity: HostIdentity, problem: str | None) -> None:
    found = identity_problems("demo", "etcd2", PEER, identity)
    if problem is None:
        assert found == []
    else:
        assert any(problem in p for p in found), found


def member(id_: int, name: str, peer: str) -> Member:
    return Member(id_, name, (peer,), (peer.replace("2380", "2379"),), False)


VIEW = ClusterView(members=[member(1, "etcd1", "https://10.0.0.1:2380"), member(2, "etcd2", PEER)])


@pytest.mark.parametrize(
    ("name", "peer", "found", "problem"),
    [
        ("etcd2", PEER, 2, ""),
        ("etcd3", "https://10.0.0.3:2380", None, ""),
        ("etcd2", "https://10.0.0.99:2380", None, "was etcd_address or peer_port edited?"),
        ("etcd9", PEER, None, "belongs to member etcd2"),
        ("etcd1", PEER, None, "another member (1) is named etcd1"),
    ],
)
def test_members_are_matched_by_name_and_peer_url(
    name: str, peer: str, found: int | None, problem: str
) -> None:
    match, said = VIEW.match_host(name, peer)
    assert (match.id if match else None) == found
    assert problem in said and bool(said) == bool(problem)


def run(lines: list[str]) -> str:
    result = subprocess.run(
        ["sh", "-c", "set -e\n" + "\n".join(lines)], capture_output=True, text=True, check=True
    )
    return result.stdout


def test_teardown_removes_only_a_marked_folder(tmp_path: Path) -> None:
    mine, theirs, unmarked = tmp_path / "mine", tmp_path / "theirs", tmp_path / "unmarked"
    for folder, marker in ((mine, OURS), (theirs, Marker("prod", "1")), (unmarked, None)):
        (folder / "member").mkdir(parents=True)
        (folder / "lost+found").mkdir()
        if marker:
            (folder / ".etcd-deploy").write_text(marker.render())
    assert run(_remove_marked_lines(str(mine), OURS, force=False)) == f"removed {mine}\n"
    assert not mine.exists()
    for folder in (theirs, unmarked):
        said = run(_remove_marked_lines(str(folder), OURS, force=False))
        assert said == f"kept {folder}: it carries no marker of this cluster\n"
        assert (folder / "member").is_dir()
    run(_remove_marked_lines(str(unmarked), OURS, force=True))
    assert not unmarked.exists()
    assert run(_remove_marked_lines(str(tmp_path / "gone"), OURS, force=False)) == ""


def test_teardown_does_not_trust_a_symlinked_marker(tmp_path: Path) -> None:
    elsewhere = tmp_path / "marker"
    elsewhere.write_text(OURS.render())
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / ".etcd-deploy").symlink_to(elsewhere)
    assert run(_remove_marked_lines(str(folder), OURS, force=False)).startswith("kept")
    assert folder.is_dir()


def test_aside_renames_a_folder_that_is_not_a_mount_point(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "member").mkdir(parents=True)
    said = run(aside_lines(str(data), "etcd-deploy-1"))
    assert said.strip() == f"{data}.etcd-deploy-1"
    assert not data.exists() and (tmp_path / "data.etcd-deploy-1" / "member").is_dir()


def test_purge_state_keeps_what_is_not_ours(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.key").write_text("k")
    backups = tmp_path / "backups"
    backups.mkdir()
    for name in ("demo-20261203T101010.123Z.db", "demo-20261203T101011Z.db.part"):
        (backups / name).write_text("ours")
    (backups / "prod-20261203T101010.123Z.db").write_text("another cluster's")
    (tmp_path / "cluster-id").write_text("1")
    (tmp_path / "inventory.toml").write_text("x")
    (tmp_path / "other-ca.key").write_text("y")
    assert purge_state_dir(tmp_path, "demo") == [
        "backups/prod-20261203T101010.123Z.db",
        "inventory.toml",
        "other-ca.key",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "backups",
        "inventory.toml",
        "other-ca.key",
    ]
    only_ours = tmp_path / "state"
    (only_ours / "pki").mkdir(parents=True)
    (only_ours / "backups").mkdir()
    assert purge_state_dir(only_ours, "demo") == [] and not only_ours.exists()


def test_teardown_never_follows_a_symlinked_folder(tmp_path: Path) -> None:
    target = tmp_path / "disk"
    (target / "member").mkdir(parents=True)
    (target / ".etcd-deploy").write_text(OURS.render())
    link = tmp_path / "data"
    link.symlink_to(target)
    for force in (False, True):
        said = run(_remove_marked_lines(str(link), OURS, force=force, also=["echo also"]))
        assert said == f"kept {link}: it is a symlink\n"
    assert (target / "member").is_dir() and link.is_symlink()


def test_teardown_runs_its_extra_lines_only_when_it_removed_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    assert "also" not in run(
        _remove_marked_lines(str(folder), OURS, force=False, also=["echo also"])
    )
    (folder / ".etcd-deploy").write_text(OURS.render())
    assert "also" in run(_remove_marked_lines(str(folder), OURS, force=False, also=["echo also"]))


def test_a_symlinked_folder_is_never_ours() -> None:
    verdict = judge("/var/lib/etcd", DirFacts(True, OURS.render(), link="/data/etcd"), DATA, OURS)
    assert verdict.state == "link" and "set cluster.data_dir to the folder itself" in verdict.reason
    assert not verdict.may_write and not verdict.may_remove
    assert parse_folder(["link /data/etcd", "exists"]).link == "/data/etcd"


def test_an_env_is_ours_by_its_member_name_and_token() -> None:
    env = {"ETCD_NAME": "etcd2", "ETCD_INITIAL_CLUSTER_TOKEN": TOKEN}
    assert env_is_ours("demo", "etcd2", env)
    assert not env_is_ours("demo", "etcd3", env)
    assert not env_is_ours("demo", "etcd2", env | {"ETCD_INITIAL_CLUSTER_TOKEN": "etcd-cluster"})
    assert not env_is_ours("demo", "etcd2", {})


@pytest.mark.parametrize(
    ("trusted", "known", "trust"),
    [
        (set(), {"a"}, "none"),
        ({"a"}, set(), "unknown"),
        ({"a", "b"}, {"b", "c"}, "ours"),  # a bundle that holds one of ours
        ({"a"}, {"b"}, "foreign"),
    ],
)
def test_ca_trust(trusted: set[str], known: set[str], trust: str) -> None:
    assert ca_trust(trusted, known) == trust
