"""The per-host run lock: owner record, staleness, and the take-over/release scripts (run
locally with `sh` against a lock file in tmp_path)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

import orchestrator.lock as lock
from orchestrator.lock import (
    LEASE_SECONDS,
    LockOwner,
    new_owner,
    parse_owner,
    release_script,
    stale_reason,
    takeover_script,
)

NOW = 1_715_000_000.0
HERE = socket.gethostname()


def owner(
    *, control: str = "ctl.example", pid: int = 4242, started: float = NOW, run_id: str = "run1"
) -> LockOwner:
    return LockOwner(run_id, control, pid, "up", started)


def dead_pid() -> int:
    """A pid no process can have: above the kernel's pid_max."""
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except OSError:
        pid_max = 4_194_304  # the largest pid_max Linux allows
    return pid_max + 1


def sh(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True)


@pytest.fixture
def lock_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "etcd-deploy.lock"
    monkeypatch.setattr(lock, "LOCK_PATH", str(path))
    return path


# --------------------------------------------------------------------------- owner record


def test_render_parse_round_trip() -> None:
    original = LockOwner("0a1b2c3d4e5f", "ctl.example", 4242, "plan", 1_715_000_000.75)
    text = original.render()
    assert json.loads(text) == {
        "run": "0a1b2c3d4e5f",
        "control": "ctl.example",
        "pid": 4242,
        "command": "plan",
        "started": 1_715_000_000,  # whole seconds on the host
    }
    assert parse_owner(text) == LockOwner("0a1b2c3d4e5f", "ctl.example", 4242, "plan", 1.715e9)
    assert parse_owner(text + "\n") == parse_owner(text)
    assert parse_owner(f"  {text}\nsecond line\n") == parse_owner(text)


def test_parse_owner_without_command() -> None:
    text = json.dumps({"run": "r", "control": "c", "pid": "12", "started": "5"})
    assert parse_owner(text) == LockOwner("r", "c", 12, "?", 5.0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "not json",
        "acquired",
        "null",
        "[1, 2]",
        '"a string"',
        "{}",
        '{"run": "r", "control": "c", "pid": 1}',  # no started
        '{"run": "r", "control": "c", "pid": "x", "started": 1}',
        '{"run": "r", "control": "c", "pid": null, "started": 1}',
        '{"run": "r", "control": "c", "pid": 1, "started": "yesterday"}',
    ],
)
def test_garbage_is_no_owner(text: str) -> None:
    assert parse_owner(text) is None


def test_new_owner_describes_this_process() -> None:
    me = new_owner("up")
    assert (me.control, me.pid, me.command) == (HERE, os.getpid(), "up")
    assert len(me.run_id) == 12 and int(me.run_id, 16) >= 0
    assert abs(me.started - time.time()) < 60
    assert new_owner("up").run_id != me.run_id


def test_describe() -> None:
    assert owner().describe() == "`up` (pid 4242 on ctl.example, since 2024-05-06 12:53:20 UTC)"


# --------------------------------------------------------------------------- stale_reason


@pytest.mark.parametrize(
    ("holder", "reason"),
    [
        pytest.param(None, "unreadable lock file", id="unreadable"),
        pytest.param(owner(control=HERE, pid=os.getpid()), None, id="same-host-live-pid"),
        pytest.param(owner(control="elsewhere"), None, id="other-host-fresh"),
        pytest.param(
            owner(control="elsewhere", started=NOW - LEASE_SECONDS),
            None,
            id="other-host-at-lease-end",
        ),
        pytest.param(
            owner(control="elsewhere", started=NOW - LEASE_SECONDS - 1),
            "older than 60 minutes",
            id="other-host-old",
        ),
        pytest.param(
            owner(control=HERE, pid=os.getpid(), started=NOW - 2 * LEASE_SECONDS),
            "older than 60 minutes",  # the lease is not renewed: "from anywhere"
            id="same-host-live-pid-old",
        ),
    ],
)
def test_stale_reason(holder: LockOwner | None, reason: str | None) -> None:
    assert stale_reason(holder, now=NOW) == reason


def test_same_host_dead_pid_is_stale_at_once() -> None:
    pid = dead_pid()
    assert stale_reason(owner(control=HERE, pid=pid), now=NOW) == f"pid {pid} on {HERE} is gone"


def test_dead_pid_on_another_host_is_not_judged_here() -> None:
    # The pid belongs to another machine: only the lease can make it stale.
    assert stale_reason(owner(control="elsewhere", pid=dead_pid()), now=NOW) is None


def test_stale_reason_defaults_to_now() -> None:
    assert stale_reason(owner(control="elsewhere", started=time.time())) is None
    assert stale_reason(owner(control="elsewhere", started=time.time() - 2 * LEASE_SECONDS))


# --------------------------------------------------------------------------- scripts


def test_scripts_are_valid_sh() -> None:
    for script in (takeover_script(owner()), release_script(owner())):
        result = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
        assert result.returncode == 0, result.stderr


def test_takeover_overwrites_the_lock(lock_path: Path) -> None:
    lock_path.write_text(owner(run_id="old").render() + "\n")
    me = owner(run_id="new", control="ctl's host")  # a quote in the JSON
    assert sh(takeover_script(me)).returncode == 0
    assert parse_owner(lock_path.read_text()) == me


def test_release_removes_our_own_lock(lock_path: Path) -> None:
    me = owner(run_id="0a1b2c3d4e5f")
    lock_path.write_text(me.render() + "\n")
    assert sh(release_script(me)).returncode == 0
    assert not lock_path.exists()


@pytest.mark.parametrize("theirs", ["ffffffffffff", "0a1b2c3d4e5f0", "0a1b2c3d4e5"])
def test_release_leaves_somebody_elses_lock(lock_path: Path, theirs: str) -> None:
    content = owner(run_id=theirs).render() + "\n"
    lock_path.write_text(content)
    assert sh(release_script(owner(run_id="0a1b2c3d4e5f"))).returncode == 0
    assert lock_path.read_text() == content


def test_release_without_a_lock_succeeds(lock_path: Path) -> None:
    result = sh(release_script(owner()))
    assert result.returncode == 0 and result.stderr == ""
    assert not lock_path.exists()


def test_release_after_takeover(lock_path: Path) -> None:
    me = new_owner("up")
    lock_path.write_text("garbage\n")
    sh(takeover_script(me))
    sh(release_script(me))
    assert not lock_path.exists()


# ------------------------------------------------------------------ the state dir's lock


def test_state_lock_refuses_a_second_holder_naming_the_first(tmp_path: Path) -> None:
    first, second = lock.StateLock(tmp_path / "state"), lock.StateLock(tmp_path / "state")
    first.acquire(owner(run_id="first"))
    assert (tmp_path / "state").is_dir()
    assert os.stat(first.path).st_mode & 0o777 == 0o600
    with pytest.raises(lock.SafetyRefusal) as refused:
        second.acquire(owner(run_id="second"))
    message = str(refused.value)
    assert "locked by another etcd-deploy run" in message
    assert "`up` (pid 4242 on ctl.example" in message
    assert str(tmp_path / "state") in message
    assert not second.held


def test_state_lock_is_free_again_after_release(tmp_path: Path) -> None:
    first, second = lock.StateLock(tmp_path), lock.StateLock(tmp_path)
    first.acquire(owner(run_id="first"))
    first.acquire(owner(run_id="first"))  # held already: a no-op
    first.release()
    assert first.path.read_text() == ""
    second.acquire(owner(run_id="second"))
    assert parse_owner(second.path.read_text()) == owner(run_id="second")
    second.release()
    second.release()  # released already: a no-op


def test_state_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    """flock goes with its process: a run killed with SIGKILL leaves nothing to take over."""
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
            " fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(tmp_path / lock.STATE_LOCK_NAME),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(lock.SafetyRefusal):
            lock.StateLock(tmp_path).acquire(owner())
    finally:
        holder.kill()
        holder.wait()
    state = lock.StateLock(tmp_path)
    state.acquire(owner())
    assert state.held
