"""Plan: the files etcd-deploy wants on a host, and desired state vs. facts -> changes,
each with a reason (and a unified diff for non-secret text files: "plan diffs")."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.core.facts import HostFacts
from orchestrator.core.host_paths import UNIT_PATH
from orchestrator.core.host_plan import (
    SYMLINK_REPLACED,
    DesiredFile,
    HostPlan,
    desired_dirs,
    plan_host,
)
from orchestrator.core.inventory import Inventory
from orchestrator.core.render import HOST_CERT_KINDS as CERT_KINDS
from orchestrator.core.versions import parse_version
from tests.unit.helpers import (
    converged_facts,
    env_for,
    make_inventory,
    wanted_files,
)

VERSION = "3.5.30"


def plan_for(
    inv: Inventory,
    files: list[DesiredFile],
    facts: HostFacts,
    *,
    member: bool = True,
    bootstrap: bool = False,
    version: str = VERSION,
) -> HostPlan:
    return plan_host(
        inv,
        inv.hosts[0],
        files,
        facts,
        version=parse_version(version),
        member=member,
        bootstrap=bootstrap,
    )


def by_kind(files: list[DesiredFile], kind: str) -> list[DesiredFile]:
    return [f for f in files if f.kind == kind]


def one(files: list[DesiredFile], kind: str) -> DesiredFile:
    (found,) = by_kind(files, kind)
    return found


def changed_paths(plan: HostPlan) -> set[str]:
    return {c.file.path for c in plan.files}


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return make_inventory(tmp_path)


# --------------------------------------------------------------------------- desired_files


def test_desired_files_paths_modes_and_owners(inv: Inventory) -> None:
    files = wanted_files(inv)
    table = {f.path: (f.kind, f.mode, f.owner, f.group) for f in files}
    expected = {
        "/var/lib/etcd/.etcd-deploy": ("marker", 0o644, "root", "root"),
        "/etc/etcd/.etcd-deploy": ("marker", 0o644, "root", "root"),
        UNIT_PATH: ("unit", 0o644, "root", "root"),
        "/etc/etcd/etcd.env": ("env", 0o640, "root", "etcd"),
        "/etc/etcd/etcdctl.env": ("etcdctl-env", 0o644, "root", "root"),
        "/opt/bin/etcdctl.sh": ("wrapper", 0o755, "root", "root"),
        "/etc/etcd/pki/ca.crt": ("ca", 0o644, "etcd", "etcd"),
    }
    for kind in CERT_KINDS:
        expected[f"/etc/etcd/pki/{kind}.crt"] = ("cert", 0o644, "etcd", "etcd")
        expected[f"/etc/etcd/pki/{kind}.key"] = ("key", 0o600, "etcd", "etcd")
    assert table == expected
    assert len(files) == len(table)  # no path twice


def test_desired_files_follow_configured_dirs(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, config_dir="/srv/etcd-conf", install_dir="/usr/local/etcd")
    paths = {f.path for f in wanted_files(inv)}
    assert "/srv/etcd-conf/etcd.env" in paths
    assert "/srv/etcd-conf/etcdctl.env" in paths
    assert "/usr/local/etcd/etcdctl.sh" in paths
    assert UNIT_PATH in paths  # systemd's folder never moves
    pki = [p for p in paths if p.endswith((".crt", ".key"))]
    assert pki and all(p.startswith("/srv/etcd-conf/pki/") for p in pki)


def test_only_keys_are_secret(inv: Inventory) -> None:
    files = wanted_files(inv)
    assert {f.path for f in files if f.secret} == {f.path for f in by_kind(files, "key")}
    assert all(f.mode == 0o600 for f in files if f.secret)
    assert all(f.content.startswith(b"-----BEGIN PRIVATE KEY") for f in files if f.secret)


def test_desired_file_sha256_is_of_content() -> None:
    f = DesiredFile("/x", b"abc", 0o644, "root", "root", "unit")
    assert f.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_desired_dirs(inv: Inventory) -> None:
    assert desired_dirs(inv) == {
        "/opt/bin": (0o755, "root", "root"),
        "/etc/etcd": (0o755, "root", "root"),
        "/etc/etcd/pki": (0o700, "etcd", "etcd"),
        "/var/lib/etcd": (0o700, "etcd", "etcd"),
    }


# --------------------------------------------------------------------------- plan_host


@pytest.mark.parametrize(("bootstrap", "membership"), [(True, "bootstrap"), (False, "join")])
def test_bare_host(inv: Inventory, bootstrap: bool, membership: str) -> None:
    files = wanted_files(inv, env=env_for(inv, inv.hosts[0], state="new", members=1))
    plan = plan_for(inv, files, HostFacts(), member=False, bootstrap=bootstrap)

    assert plan.changes
    assert plan.prepare == "no etcd user"
    assert plan.install == f"etcd {VERSION} (not installed)"
    assert [c.file for c in plan.files] == files  # every file, in order
    assert {c.reason for c in plan.files} == {"missing"}
    assert all(c.diff == "" for c in plan.files)
    assert plan.membership == membership
    assert plan.restart_reasons == []  # nothing runs yet
    assert plan.enable is False  # starting the new member enables it
    assert any(c.file.kind == "unit" for c in plan.files)
    assert plan.noops == []
    # A founder's env is known up front and goes out with the install; a joiner's names
    # the members of its join, so it waits for that turn.
    assert [c.file.kind for c in plan.deferred] == ([] if bootstrap else ["env"])


def test_user_present_but_dirs_wrong(inv: Inventory) -> None:
    files = wanted_files(inv)
    facts = converged_facts(inv, files)
    facts.dirs["/etc/etcd/pki"] = (0o755, "etcd", "etcd")
    del facts.dirs["/var/lib/etcd"]
    plan = plan_for(inv, files, facts)
    assert plan.prepare == (
        "directories missing or with wrong mode/owner: /etc/etcd/pki, /var/lib/etcd"
    )
    assert plan.changes


def test_up_to_date_running_member_has_nothing_to_do(inv: Inventory) -> None:
    files = wanted_files(inv)
    plan = plan_for(inv, files, converged_facts(inv, files))
    assert not plan.changes
    assert plan == HostPlan(
        host="etcd1",
        noops=[
            f"etcd {VERSION} already installed",
            f"all {len(files)} files up to date",
            "etcd running, no restart needed",
        ],
    )
    assert not any(c.file.kind == "unit" for c in plan.files)


def test_initial_lines_alone_never_rewrite_a_running_members_env(inv: Inventory) -> None:
    host = inv.hosts[0]
    on_host = wanted_files(inv, env=env_for(inv, host, state="new", members=1))
    wanted = wanted_files(inv, env=env_for(inv, host, state="existing"))
    assert one(on_host, "env").content != one(wanted, "env").content

    plan = plan_for(inv, wanted, converged_facts(inv, on_host))
    assert plan.files == []
    assert not plan.changes
    assert "etcd running, no restart needed" in plan.noops


def test_initial_lines_do_matter_for_a_member_that_is_not_running(inv: Inventory) -> None:
    host = inv.hosts[0]
    on_host = wanted_files(inv, env=env_for(inv, host, state="new", members=1))
    wanted = wanted_files(inv, env=env_for(inv, host, state="existing"))
    facts = converged_facts(inv, on_host, active_state="inactive")
    plan = plan_for(inv, wanted, facts)
    assert changed_paths(plan) == {"/etc/etcd/etcd.env"}
    assert plan.membership == "start"


def test_env_flag_change_shows_a_diff_and_restarts(tmp_path: Path) -> None:
    old_inv = make_inventory(tmp_path, flags={"heartbeat-interval": "100"})
    new_inv = make_inventory(tmp_path, flags={"heartbeat-interval": "200"})
    on_host = wanted_files(old_inv)
    wanted = wanted_files(new_inv)

    plan = plan_for(new_inv, wanted, converged_facts(old_inv, on_host))

    (change,) = plan.files
    assert change.file.path == "/etc/etcd/etcd.env"
    assert change.reason == "content differs"
    assert change.diff == (
        "--- /etc/etcd/etcd.env (host)\n"
        "+++ /etc/etcd/etcd.env (wanted)\n"
        "@@ -20,5 +20,5 @@\n"
        " # etcd-deploy's defaults and [cluster.flags]\n"
        " ETCD_EXPERIMENTAL_COMPACT_HASH_CHECK_ENABLED=true\n"
        " ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK=true\n"
        "-ETCD_HEARTBEAT_INTERVAL=100\n"
        "+ETCD_HEARTBEAT_INTERVAL=200\n"
        " ETCD_LISTEN_METRICS_URLS=http://127.0.0.1:2381\n"
    )
    assert plan.restart_reasons == ["changed: env"]
    assert not any(c.file.kind == "unit" for c in plan.files)
    assert plan.membership == ""


def test_env_diff_also_shows_initial_lines_when_something_else_changed(tmp_path: Path) -> None:
    old_inv = make_inventory(tmp_path)
    new_inv = make_inventory(tmp_path, flags={"quota-backend-bytes": "8589934592"})
    host = old_inv.hosts[0]
    on_host = wanted_files(old_inv, env=env_for(old_inv, host, state="new", members=1))
    plan = plan_for(new_inv, wanted_files(new_inv), converged_facts(old_inv, on_host))
    (change,) = plan.files
    assert "-ETCD_INITIAL_CLUSTER_STATE=new\n" in change.diff
    assert "+ETCD_INITIAL_CLUSTER_STATE=existing\n" in change.diff
    assert "+ETCD_QUOTA_BACKEND_BYTES=8589934592\n" in change.diff


def test_new_certs_on_a_running_member_need_no_restart(inv: Inventory) -> None:
    on_host = wanted_files(inv, generation=1)
    wanted = wanted_files(inv, generation=2)
    plan = plan_for(inv, wanted, converged_facts(inv, on_host))

    assert {c.file.kind for c in plan.files} == {"cert", "key"}
    assert len(plan.files) == 2 * len(CERT_KINDS)
    assert {c.reason for c in plan.files} == {"content differs"}
    assert plan.restart_reasons == []  # etcd reloads its certs on each handshake
    assert "etcd running, no restart needed" in plan.noops
    assert not any(c.file.kind == "unit" for c in plan.files)
    assert plan.changes


def test_a_changed_key_never_shows_a_diff(inv: Inventory) -> None:
    on_host = wanted_files(inv, generation=1)
    wanted = wanted_files(inv, generation=2)
    facts = converged_facts(inv, on_host)
    # Even if a key's text ended up in the facts, the plan must not print it.
    for f in by_kind(on_host, "key"):
        facts.texts[f.path] = f.content.decode()
    plan = plan_for(inv, wanted, facts)
    keys = [c for c in plan.files if c.file.kind == "key"]
    assert len(keys) == len(CERT_KINDS)
    assert all(c.file.secret and c.diff == "" for c in keys)


def test_file_without_text_in_facts_has_no_diff(inv: Inventory) -> None:
    on_host = wanted_files(inv, generation=1)
    wanted = wanted_files(inv, generation=2)
    plan = plan_for(inv, wanted, converged_facts(inv, on_host))
    assert all(c.diff == "" for c in plan.files if c.file.kind == "cert")


@pytest.mark.parametrize(
    ("path", "have", "reason"),
    [
        (
            "/etc/etcd/pki/server.key",
            (0o644, "etcd", "etcd"),
            "mode/owner 0644 etcd:etcd -> 0600 etcd:etcd",
        ),
        (
            "/etc/etcd/etcd.env",
            (0o640, "root", "root"),
            "mode/owner 0640 root:root -> 0640 root:etcd",
        ),
        (
            "/opt/bin/etcdctl.sh",
            (0o644, "root", "root"),
            "mode/owner 0644 root:root -> 0755 root:root",
        ),
    ],
)
def test_wrong_mode_or_owner_only(
    inv: Inventory, path: str, have: tuple[int, str, str], reason: str
) -> None:
    files = wanted_files(inv)
    facts = converged_facts(inv, files)
    facts.files[path] = replace(facts.files[path], mode=have[0], owner=have[1], group=have[2])
    plan = plan_for(inv, files, facts)
    (change,) = plan.files
    assert change.file.path == path
    assert change.reason == reason
    assert change.diff == ""


def test_new_binary_on_a_running_member(inv: Inventory) -> None:
    files = wanted_files(inv)
    plan = plan_for(inv, files, converged_facts(inv, files, version="3.5.16"))
    assert plan.install == f"etcd {VERSION} (installed: 3.5.16)"
    assert plan.restart_reasons == ["new binary"]
    assert plan.files == []
    assert f"all {len(files)} files up to date" in plan.noops


def test_unit_and_env_change_with_new_binary_lists_every_restart_reason(tmp_path: Path) -> None:
    old_inv = make_inventory(tmp_path)
    new_inv = make_inventory(tmp_path, data_dir="/srv/etcd-data")  # unit + env
    on_host = wanted_files(old_inv)
    facts = converged_facts(old_inv, on_host, version="3.5.16")
    plan = plan_for(new_inv, wanted_files(new_inv), facts)
    assert {"unit", "env"} <= {c.file.kind for c in plan.files}
    assert plan.restart_reasons == ["changed: env, unit", "new binary"]
    assert any(c.file.kind == "unit" for c in plan.files)


@pytest.mark.parametrize("active_state", ["inactive", "failed", ""])
def test_stopped_member_with_data_is_started(inv: Inventory, active_state: str) -> None:
    files = wanted_files(inv)
    facts = converged_facts(
        inv, files, version="3.5.16", active_state=active_state, unit_file_state="disabled"
    )
    plan = plan_for(inv, files, facts)
    assert plan.membership == "start"
    assert plan.restart_reasons == []  # starting it picks up the new binary anyway
    assert plan.install
    assert plan.enable is False  # the start enables it
    assert "etcd running, no restart needed" not in plan.noops


@pytest.mark.parametrize(
    ("unit_file_state", "enable"),
    [("enabled", False), ("disabled", True), ("", True), ("masked", True)],
)
def test_running_member_unit_enabled_at_boot(
    inv: Inventory, unit_file_state: str, enable: bool
) -> None:
    files = wanted_files(inv)
    plan = plan_for(inv, files, converged_facts(inv, files, unit_file_state=unit_file_state))
    assert plan.enable is enable
    assert plan.changes is enable
    assert plan.restart_reasons == []


def _unit_content_change(inv: Inventory, files: list[DesiredFile], facts: HostFacts) -> None:
    unit = one(files, "unit")
    facts.files[unit.path] = replace(facts.files[unit.path], sha256="0" * 64)
    facts.texts[unit.path] = "[Unit]\nDescription=old\n"


def _unit_mode_change(inv: Inventory, files: list[DesiredFile], facts: HostFacts) -> None:
    facts.files[UNIT_PATH] = replace(facts.files[UNIT_PATH], mode=0o600)


def _env_content_change(inv: Inventory, files: list[DesiredFile], facts: HostFacts) -> None:
    env = one(files, "env")
    facts.files[env.path] = replace(facts.files[env.path], sha256="0" * 64)
    facts.texts[env.path] = env.content.decode() + "ETCD_DEBUG=true\n"


def _cert_change(inv: Inventory, files: list[DesiredFile], facts: HostFacts) -> None:
    for f in by_kind(files, "cert"):
        facts.files[f.path] = replace(facts.files[f.path], sha256="0" * 64)


def _wrapper_change(inv: Inventory, files: list[DesiredFile], facts: HostFacts) -> None:
    wrapper = one(files, "wrapper")
    facts.files[wrapper.path] = replace(facts.files[wrapper.path], sha256="0" * 64)


@pytest.mark.parametrize(
    ("change", "reload", "restart"),
    [
        (_unit_content_change, True, ["changed: unit"]),
        (_unit_mode_change, True, None),  # restart or not: not pinned here
        (_env_content_change, False, ["changed: env"]),
        (_cert_change, False, []),
        (_wrapper_change, False, []),
    ],
    ids=["unit-content", "unit-mode", "env", "certs", "wrapper"],
)
def test_daemon_reload_only_when_the_unit_changes(
    inv: Inventory, change, reload: bool, restart: list[str] | None
) -> None:
    files = wanted_files(inv)
    facts = converged_facts(inv, files)
    change(inv, files, facts)
    plan = plan_for(inv, files, facts)
    assert plan.files
    assert any(c.file.kind == "unit" for c in plan.files) is reload
    if restart is not None:
        assert plan.restart_reasons == restart


def test_unit_diff_is_shown(inv: Inventory) -> None:
    files = wanted_files(inv)
    facts = converged_facts(inv, files)
    _unit_content_change(inv, files, facts)
    (change,) = plan_for(inv, files, facts).files
    assert change.diff.startswith(f"--- {UNIT_PATH} (host)\n+++ {UNIT_PATH} (wanted)\n")
    assert "-Description=old\n" in change.diff
    assert "+Description=etcd key-value store (cluster demo)\n" in change.diff


def test_running_host_that_is_not_a_member_joins(inv: Inventory) -> None:
    files = wanted_files(inv)
    plan = plan_for(inv, files, converged_facts(inv, files), member=False)
    assert plan.membership == "join"
    assert plan.restart_reasons == []


def test_env_with_initial_only_diff_still_gets_its_mode_fixed(inv: Inventory) -> None:
    host = inv.hosts[0]
    on_host = wanted_files(inv, env=env_for(inv, host, state="new", members=1))
    wanted = wanted_files(inv, env=env_for(inv, host, state="existing"))
    facts = converged_facts(inv, on_host)
    env_path = one(wanted, "env").path
    facts.files[env_path] = replace(facts.files[env_path], mode=0o644)  # world-readable
    plan = plan_for(inv, wanted, facts)
    assert changed_paths(plan) == {env_path}


def test_a_symlink_at_a_wanted_path_is_replaced_never_read(inv: Inventory) -> None:
    """A ca.crt linked to a root-only file: its target is never shown (no diff), the link is
    replaced by the file (a rename), and it counts as a content change."""
    files = wanted_files(inv)
    facts = converged_facts(inv, files)
    ca = next(f for f in files if f.kind == "ca")
    del facts.files[ca.path]
    del facts.texts[ca.path]
    facts.links.add(ca.path)
    plan = plan_host(
        inv,
        inv.hosts[0],
        files,
        facts,
        version=parse_version("3.5.30"),
        member=True,
        bootstrap=False,
    )
    [change] = plan.files
    assert change.file.path == ca.path and change.reason == SYMLINK_REPLACED
    assert change.diff == "" and change.content_changed
    assert plan.restart_reasons == ["changed: ca"]
