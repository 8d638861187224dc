"""Facts: the one-command script that reads a host, and the parser of its output.

Parser tests use hand-made output in the script's format (`@@etcd-deploy@@ <section>`
lines); one test runs the real script with `sh` against folders in tmp_path.
"""

from __future__ import annotations

import dataclasses
import grp
import hashlib
import os
import platform
import pwd
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.core.facts import (
    MARK,
    TEXT_KINDS,
    HostFacts,
    RemoteFile,
    facts_script,
    parse_facts,
)
from orchestrator.core.host_lock import LockOwner, parse_owner
from tests.unit.helpers import fake_certs, make_inventory, wanted_files

OWNER = LockOwner("0a1b2c3d4e5f", "ctl.example", 4242, "up", 1_715_000_000)
SHA_A = "a" * 64
SHA_B = "b" * 64

REALISTIC = f"""\
{MARK} lock
acquired
{MARK} arch
x86_64
{MARK} version
etcd Version: 3.5.1
{MARK} user
998
{MARK} dirs
755 root root /opt/bin
755 root root /etc/etcd
700 etcd etcd /etc/etcd/pki
700 etcd etcd /var/lib/etcd
{MARK} service
LoadState=loaded
ActiveState=active
UnitFileState=enabled
ActiveEnterTimestamp=Mon 2024-05-06 10:00:00 UTC
{MARK} data
yes
{MARK} files
{SHA_A} 644 root root /etc/systemd/system/etcd.service
{SHA_B} 640 root etcd /etc/etcd/etcd.env
{SHA_A} 600 etcd etcd /etc/etcd/pki/server.key
{MARK} text /etc/systemd/system/etcd.service
[Unit]
Description=etcd

{MARK} text /etc/etcd/etcd.env
ETCD_NAME=etcd1
ETCD_DATA_DIR=/var/lib/etcd

"""


def section(name: str, *lines: str) -> str:
    return "".join(f"{line}\n" for line in (f"{MARK} {name}", *lines))


def text_section(path: str, content: str) -> str:
    """What `echo MARK text PATH; cat PATH; echo` prints."""
    return f"{MARK} text {path}\n{content}\n"


def files_section(*paths: str) -> str:
    return section("files", *(f"{SHA_A} 644 root root {p}" for p in paths))


# --------------------------------------------------------------------------- parse_facts


def test_parse_realistic_output() -> None:
    facts = parse_facts(REALISTIC)
    assert facts.lock_acquired and facts.lock == "acquired"
    assert facts.arch == "x86_64"
    assert facts.etcd_version == "3.5.1"
    assert facts.etcd_user
    assert facts.dirs == {
        "/opt/bin": (0o755, "root", "root"),
        "/etc/etcd": (0o755, "root", "root"),
        "/etc/etcd/pki": (0o700, "etcd", "etcd"),
        "/var/lib/etcd": (0o700, "etcd", "etcd"),
    }
    assert facts.active_state == "active" and facts.running
    assert facts.unit_file_state == "enabled"
    assert facts.active_since == "Mon 2024-05-06 10:00:00 UTC"
    assert facts.has_data
    assert facts.files == {
        "/etc/systemd/system/etcd.service": RemoteFile(SHA_A, 0o644, "root", "root"),
        "/etc/etcd/etcd.env": RemoteFile(SHA_B, 0o640, "root", "etcd"),
        "/etc/etcd/pki/server.key": RemoteFile(SHA_A, 0o600, "etcd", "etcd"),
    }
    assert facts.texts == {
        "/etc/systemd/system/etcd.service": "[Unit]\nDescription=etcd\n",
        "/etc/etcd/etcd.env": "ETCD_NAME=etcd1\nETCD_DATA_DIR=/var/lib/etcd\n",
    }


def test_parse_empty_output_gives_defaults() -> None:
    assert parse_facts("") == HostFacts()


def test_lines_before_the_first_mark_are_ignored() -> None:
    facts = parse_facts("Welcome to host1!\nuname -m\n" + section("arch", "aarch64"))
    assert facts.arch == "aarch64"


def test_lock_held_by_another_run() -> None:
    facts = parse_facts(section("lock", OWNER.render()) + section("arch", "x86_64"))
    assert not facts.lock_acquired
    assert facts.lock == OWNER.render()
    holder = parse_owner(facts.lock)
    assert holder == OWNER


@pytest.mark.parametrize(
    ("lines", "version"),
    [
        (["etcd Version: 3.5.1"], "3.5.1"),
        (["etcd Version: 3.4.27"], "3.4.27"),
        (["etcd Version: 3.6.0-rc.1"], "3.6.0-rc.1"),
        ([], None),  # no binary: --version printed nothing
        (["sh: 1: /opt/bin/etcd: Exec format error"], None),
    ],
)
def test_version(lines: list[str], version: str | None) -> None:
    assert parse_facts(section("version", *lines)).etcd_version == version


@pytest.mark.parametrize(("lines", "present"), [(["998"], True), ([], False), (["x"], False)])
def test_etcd_user(lines: list[str], present: bool) -> None:
    assert parse_facts(section("user", *lines)).etcd_user is present


def test_dirs_keep_path_with_spaces_and_skip_short_rows() -> None:
    facts = parse_facts(section("dirs", "2750 etcd etcd /srv/my data", "garbage", ""))
    assert facts.dirs == {"/srv/my data": (0o2750, "etcd", "etcd")}


@pytest.mark.parametrize(
    ("active", "running"),
    [
        ("active", True),
        ("activating", True),
        ("reloading", True),
        ("inactive", False),
        ("failed", False),
        ("deactivating", False),
    ],
)
def test_loaded_unit_states(active: str, running: bool) -> None:
    facts = parse_facts(
        section(
            "service",
            "LoadState=loaded",
            f"ActiveState={active}",
            "UnitFileState=disabled",
            "ActiveEnterTimestamp=",
        )
    )
    assert facts.active_state == active
    assert facts.running is running
    assert facts.unit_file_state == "disabled"
    assert facts.active_since == ""


def test_unit_not_found_looks_like_no_unit() -> None:
    facts = parse_facts(
        section(
            "service",
            "LoadState=not-found",
            "ActiveState=inactive",
            "UnitFileState=",
            "ActiveEnterTimestamp=",
        )
    )
    assert (facts.active_state, facts.unit_file_state, facts.active_since) == ("", "", "")
    assert not facts.running


def test_no_systemctl_output_at_all() -> None:
    facts = parse_facts(section("service") + section("data"))
    assert facts.active_state == "" and not facts.running


@pytest.mark.parametrize(("lines", "has_data"), [(["yes"], True), ([], False)])
def test_data(lines: list[str], has_data: bool) -> None:
    assert parse_facts(section("data", *lines)).has_data is has_data


def test_file_rows() -> None:
    facts = parse_facts(
        section(
            "files",
            f"{SHA_A} 600 etcd etcd /etc/etcd/pki/peer.key",
            f"{SHA_B} 4755 root root /srv/odd dir/file name",
            "short row",
        )
    )
    assert facts.files == {
        "/etc/etcd/pki/peer.key": RemoteFile(SHA_A, 0o600, "etcd", "etcd"),
        "/srv/odd dir/file name": RemoteFile(SHA_B, 0o4755, "root", "root"),
    }


TEXTS = [
    pytest.param("A=1\nB=2\n", id="trailing-newline"),
    pytest.param("A=1\nB=2", id="no-trailing-newline"),
    pytest.param("", id="empty"),
    pytest.param("\n", id="only-newline"),
    pytest.param("A=1\n\n\n", id="blank-lines-at-end"),
    pytest.param("\n\nA=1\n", id="blank-lines-at-start"),
    pytest.param("  indented \t\nx=@@etcd-deploy@@\n", id="spaces-and-mark-inside"),
]


@pytest.mark.parametrize("content", TEXTS)
@pytest.mark.parametrize("position", ["middle", "last"])
def test_text_round_trips_exactly(content: str, position: str) -> None:
    path = "/etc/etcd/etcd.env"
    other = "/etc/etcd/etcdctl.env"
    texts = [(path, content), (other, "ETCDCTL_API=3\n")]
    if position == "last":
        texts.reverse()
    output = files_section(path, other) + "".join(text_section(p, c) for p, c in texts)
    facts = parse_facts(output)
    assert facts.texts == {path: content, other: "ETCDCTL_API=3\n"}


def test_text_of_a_missing_file_is_dropped() -> None:
    output = files_section("/a") + text_section("/a", "x\n") + text_section("/gone", "")
    assert parse_facts(output).texts == {"/a": "x\n"}


# --------------------------------------------------------------------------- facts_script


def script_for(tmp_path: Path, **cluster: str) -> str:
    inv = make_inventory(tmp_path, **cluster)
    files = wanted_files(inv)
    return facts_script(
        inv,
        [f.path for f in files],
        [f.path for f in files if f.kind in TEXT_KINDS],
        "/run/etcd-deploy.lock",
        OWNER.render(),
    )


def test_text_kinds_never_include_secrets_or_leaf_certs() -> None:
    """The CA cert is public and read to tell whose cluster a host holds; keys never are."""
    assert set(TEXT_KINDS) == {"unit", "env", "etcdctl-env", "wrapper", "ca"}


def test_script_has_every_section_in_order(tmp_path: Path) -> None:
    script = script_for(tmp_path)
    marks = [
        line.split(MARK + " ", 1)[1].rstrip("'\"")
        for line in script.replace("; ", "\n").splitlines()
        if line.startswith((f'echo "{MARK} ', f"echo '{MARK} "))
    ]
    assert marks == [
        "lock",
        "arch",
        "version",
        "user",
        "dirs",
        "service",
        "data",
        "files",
        "folder /var/lib/etcd",
        "folder /etc/etcd",
        "text /etc/systemd/system/etcd.service",
        "text /etc/etcd/etcd.env",
        "text /etc/etcd/etcdctl.env",
        "text /opt/bin/etcdctl.sh",
        "text /etc/etcd/pki/ca.crt",
    ]


def test_script_contains_no_secret_material(tmp_path: Path) -> None:
    script = script_for(tmp_path)
    for cert, key in fake_certs().values():
        assert key.decode() not in script
        assert cert.decode() not in script
    assert "PRIVATE KEY" not in script
    # Key files are hashed, never printed.
    assert "/etc/etcd/pki/server.key" in script
    assert "cat /etc/etcd/pki/server.key" not in script
    assert "cat '/etc/etcd/pki/server.key'" not in script


def test_script_quotes_paths_and_lock_content(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path)
    odd = "/srv/my etcd/it's.env"
    script = facts_script(inv, [odd, "/etc/etcd/etcd.env"], [odd], "/run/x y.lock", OWNER.render())
    quoted = shlex.quote(odd)
    assert f"for f in {quoted} /etc/etcd/etcd.env; do" in script
    assert f"cat {quoted} 2>/dev/null" in script
    assert "lk='/run/x y.lock';" in script and "exec 9>>'/run/x y.lock.guard'" in script
    assert shlex.quote(OWNER.render()) in script
    assert f"printf '%s\\n' {shlex.quote(OWNER.render())} >" in script
    syntax_check(script)


def syntax_check(script: str) -> None:
    result = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


def test_script_is_valid_sh(tmp_path: Path) -> None:
    syntax_check(script_for(tmp_path))
    syntax_check(script_for(tmp_path, config_dir="/srv/etcd-conf", data_dir="/srv/etcd-data"))


@pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("sh", "sha256sum", "stat", "uname")),
    reason="needs sh and GNU coreutils",
)
def test_real_script_output_round_trips(tmp_path: Path) -> None:
    """Run the script with `sh` on this machine against folders in tmp_path."""
    root = tmp_path / "host"
    inv = make_inventory(tmp_path)  # folders in /tmp are refused by the loader: set them after
    dirs = {"install_dir": f"{root}/bin", "config_dir": f"{root}/conf", "data_dir": f"{root}/data"}
    inv = dataclasses.replace(inv, cluster=dataclasses.replace(inv.cluster, **dirs))
    for sub, mode in (("bin", 0o755), ("conf", 0o750), ("conf/pki", 0o700), ("data", 0o700)):
        (root / sub).mkdir(parents=True)
        (root / sub).chmod(mode)
    (root / "data" / "member").mkdir()
    etcd = root / "bin" / "etcd"
    etcd.write_text("#!/bin/sh\necho 'etcd Version: 3.5.17'\necho 'Git SHA: 1234abc'\n")
    etcd.chmod(0o755)
    contents = {
        f"{root}/conf/etcd.env": "ETCD_NAME=etcd1\nETCD_DATA_DIR=/var/lib/etcd\n",
        f"{root}/conf/etcdctl.env": "no trailing newline",
        f"{root}/conf/empty.env": "",
        f"{root}/conf/blank-lines.env": "\n\nX=1\n\n",
        f"{root}/bin/etcdctl.sh": '#!/bin/sh\nexec etcdctl "$@"\n',  # last text section
    }
    key_path = f"{root}/conf/pki/server.key"
    secret = "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n"
    for path, text in {**contents, key_path: secret}.items():
        Path(path).write_text(text)
        Path(path).chmod(0o600 if path == key_path else 0o644)
    missing = f"{root}/conf/missing.env"
    lock_path = tmp_path / "etcd-deploy.lock"
    script = facts_script(
        inv,
        [*contents, key_path, missing],
        [*contents, missing],
        str(lock_path),
        OWNER.render(),
    )

    def run() -> str:
        result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
        return result.stdout

    output = run()
    facts = parse_facts(output)

    assert facts.lock_acquired
    assert parse_owner(lock_path.read_text()) == OWNER
    assert facts.arch == platform.machine()
    assert facts.etcd_version == "3.5.17"
    me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    assert facts.dirs == {
        f"{root}/bin": (0o755, me, group),
        f"{root}/conf": (0o750, me, group),
        f"{root}/conf/pki": (0o700, me, group),
        f"{root}/data": (0o700, me, group),
    }
    assert facts.has_data
    expected_files = {
        path: RemoteFile(hashlib.sha256(text.encode()).hexdigest(), 0o644, me, group)
        for path, text in contents.items()
    }
    expected_files[key_path] = RemoteFile(
        hashlib.sha256(secret.encode()).hexdigest(), 0o600, me, group
    )
    assert facts.files == expected_files
    assert facts.texts == contents
    assert "secret" not in output

    again = parse_facts(run())  # the lock is now held: by us, as the lock file says
    assert not again.lock_acquired
    assert parse_owner(again.lock) == OWNER
    assert again.texts == contents


def test_symlinks_are_listed_and_never_hashed_or_read(tmp_path: Path) -> None:
    output = section("files", "link /etc/etcd/pki/ca.crt", f"{SHA_A} 644 root root /a")
    output += text_section("/etc/etcd/pki/ca.crt", "") + text_section("/a", "x")
    facts = parse_facts(output)
    assert facts.links == {"/etc/etcd/pki/ca.crt"}
    assert set(facts.files) == {"/a"} and set(facts.texts) == {"/a"}
    script = script_for(tmp_path)
    assert "[ -L /etc/etcd/pki/ca.crt ] || cat /etc/etcd/pki/ca.crt" in script
    assert 'if [ -L "$f" ]; then echo "link $f"' in script
