"""The per-host run lock: owner record, staleness (the rule from data, and as this machine
judges it), and the take-over/release scripts (run locally with `sh` against a lock file in
tmp_path)."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

import orchestrator.adapters.lock as lock
import orchestrator.core.host_lock as host_lock
from orchestrator.adapters.lock import local_view, new_owner, stale_reason_here
from orchestrator.core.host_lock import (
    LEASE_SECONDS,
    RENEW_SECONDS,
    LocalView,
    LockOwner,
    acquire_script,
    parse_owner,
    refresh_script,
    release_script,
    remove_script,
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


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def lock_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "etcd-deploy.lock"
    monkeypatch.setattr(host_lock, "LOCK_PATH", str(path))
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
# The rule, from data: LIVE is the judging machine as `lock.local_view` reads it, with the
# owner's pid (4242) running there since tick 77.

LIVE = LocalView("ctl.example", machine="m1", boot="b1", pid_alive=True, pid_start=77)
DEAD = dataclasses.replace(LIVE, pid_alive=False, pid_start=None)


@pytest.mark.parametrize(
    ("holder", "reason"),
    [
        pytest.param(None, None, id="unreadable-is-held"),
        pytest.param(owner(), None, id="same-host-live-pid"),
        pytest.param(owner(control="elsewhere"), None, id="other-host-fresh"),
        pytest.param(
            owner(control="elsewhere", started=NOW - LEASE_SECONDS),
            None,
            id="other-host-at-lease-end",
        ),
        pytest.param(
            owner(control="elsewhere", started=NOW - LEASE_SECONDS - 1),
            "not renewed for over 60 minutes",
            id="other-host-old",
        ),
        pytest.param(
            owner(started=NOW - 2 * LEASE_SECONDS),
            "not renewed for over 60 minutes",  # the lease ran out: "from anywhere"
            id="same-host-live-pid-old",
        ),
    ],
)
def test_stale_reason(holder: LockOwner | None, reason: str | None) -> None:
    assert stale_reason(holder, NOW, here=LIVE) == reason


def test_same_host_dead_pid_is_stale_at_once() -> None:
    assert stale_reason(owner(), NOW, here=DEAD) == "pid 4242 on ctl.example is gone"


def test_dead_pid_on_another_host_is_not_judged_here() -> None:
    # The pid belongs to another machine: only the lease can make it stale.
    assert stale_reason(owner(control="elsewhere"), NOW, here=DEAD) is None


def test_reused_pid_is_another_process() -> None:
    holder = dataclasses.replace(owner(), machine="m1", pid_start=76, boot="b1")
    assert stale_reason(holder, NOW, here=LIVE) == "pid 4242 on ctl.example is another process now"
    assert stale_reason(dataclasses.replace(holder, pid_start=77), NOW, here=LIVE) is None
    # A start time unknown on either side proves nothing.
    assert stale_reason(dataclasses.replace(holder, pid_start=None), NOW, here=LIVE) is None
    unknown = dataclasses.replace(LIVE, pid_start=None)
    assert stale_reason(holder, NOW, here=unknown) is None


def test_owner_from_another_boot_is_stale() -> None:
    holder = dataclasses.replace(owner(), machine="m1", boot="b0")
    assert stale_reason(holder, NOW, here=LIVE) == (
        "ctl.example rebooted since pid 4242 on ctl.example took it"
    )
    assert stale_reason(holder, NOW, here=dataclasses.replace(LIVE, boot="")) is None


def test_same_hostname_other_machine_id_is_judged_by_the_lease_only() -> None:
    other = dataclasses.replace(owner(), machine="m2", boot="b0")
    assert stale_reason(other, NOW, here=DEAD) is None
    assert stale_reason(other, NOW, here=DEAD, age=LEASE_SECONDS + 1) is not None


def test_host_age_wins_over_the_owners_clock() -> None:
    # The owner's `renewed` says long ago (its clock is behind), the host saw it change now.
    behind = owner(control="elsewhere", started=NOW - 10 * LEASE_SECONDS)
    assert stale_reason(behind, NOW, here=LIVE, age=5) is None
    assert stale_reason(owner(control="elsewhere"), NOW, here=LIVE, age=LEASE_SECONDS + 1) == (
        "not renewed for over 60 minutes"
    )


@pytest.mark.parametrize(
    ("age", "reason"),
    [
        (None, None),
        (0, None),
        (LEASE_SECONDS, None),
        (LEASE_SECONDS + 1, "unreadable lock file, not renewed for over 60 minutes"),
    ],
)
def test_empty_or_unreadable_lock_is_held_until_its_lease_ends(
    age: float | None, reason: str | None
) -> None:
    assert stale_reason(None, NOW, here=LIVE, age=age) == reason


# --------------------------------------------------------------------------- scripts


def test_scripts_are_valid_sh() -> None:
    for script in (
        acquire_script(owner().render()),
        takeover_script(owner(), "0" * 64),
        refresh_script(owner()),
        release_script(owner()),
        remove_script(),
    ):
        result = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
        assert result.returncode == 0, result.stderr


def test_takeover_overwrites_the_lock(lock_path: Path) -> None:
    lock_path.write_text(owner(run_id="old").render() + "\n")
    me = owner(run_id="new", control="ctl's host")  # a quote in the JSON
    result = sh(takeover_script(me, sha(lock_path)))
    assert (result.returncode, result.stdout) == (0, "taken\n")
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
    sh(takeover_script(me, sha(lock_path)))
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


# ------------------------------------------------- owner identity: machine, pid start, boot


def test_new_owner_carries_machine_pid_start_boot_and_renewed() -> None:
    me = new_owner("up")
    assert me.machine == lock.machine_id() and me.machine
    assert me.pid_start == lock.process_start(os.getpid()) is not None
    assert me.boot == lock.boot_id()
    assert me.renewed == me.started
    back = parse_owner(me.render())
    assert back is not None
    assert (back.machine, back.pid_start, back.boot, back.run_id) == (
        me.machine,
        me.pid_start,
        me.boot,
        me.run_id,
    )
    assert me.describe().startswith(f"`up` (pid {me.pid} on {HERE}, since ")


def test_machine_id_falls_back_to_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock, "_read_first_line", lambda _path: "")
    assert lock.machine_id() == HERE


def test_process_start_of_a_missing_pid() -> None:
    assert lock.process_start(dead_pid()) is None


def test_renew_and_describe_a_renewed_owner() -> None:
    renewed = owner().renew(NOW + 3600)
    assert renewed.renewed == NOW + 3600 and renewed.last_renewed == NOW + 3600
    assert renewed.describe().endswith("since 2024-05-06 12:53:20 UTC, renewed 13:53:20 UTC)")
    assert parse_owner(renewed.render()) == renewed


def here(**kwargs: object) -> LockOwner:
    """An owner on this machine, this process by default."""
    fields: dict[str, object] = {
        "machine": lock.machine_id(),
        "pid_start": lock.process_start(os.getpid()),
        "boot": lock.boot_id(),
    }
    pid = kwargs.pop("pid", os.getpid())
    fields.update(kwargs)
    return LockOwner("r", HERE, pid, "up", NOW, **fields)  # type: ignore[arg-type]


def test_live_owner_on_this_machine_is_held() -> None:
    assert stale_reason_here(here(), now=NOW) is None
    assert stale_reason_here(owner(control=HERE, pid=os.getpid()), now=NOW) is None


def test_dead_pid_on_this_machine_is_stale_at_once() -> None:
    pid = dead_pid()
    assert stale_reason_here(here(pid=pid), now=NOW) == f"pid {pid} on {HERE} is gone"
    assert stale_reason_here(owner(control=HERE, pid=pid), now=NOW) == (
        f"pid {pid} on {HERE} is gone"
    )


def test_dead_pid_of_another_machine_is_not_looked_at() -> None:
    view = local_view(owner(control="elsewhere", pid=dead_pid()))
    assert (view.hostname, view.machine, view.boot) == (HERE, lock.machine_id(), lock.boot_id())
    assert (view.pid_alive, view.pid_start) == (True, None)  # not looked at
    assert stale_reason_here(owner(control="elsewhere", pid=dead_pid()), now=NOW) is None


def test_local_view_reads_the_owners_pid_on_this_machine() -> None:
    view = local_view(here())
    assert view.pid_alive and view.pid_start == lock.process_start(os.getpid())
    assert not local_view(here(pid=dead_pid())).pid_alive
    assert local_view(None) == LocalView(HERE, machine=lock.machine_id(), boot=lock.boot_id())


def test_reused_pid_is_stale_at_once() -> None:
    start = lock.process_start(os.getpid())
    assert start is not None
    reason = stale_reason_here(here(pid_start=start + 1), now=NOW)
    assert reason == f"pid {os.getpid()} on {HERE} is another process now"


def test_owner_from_before_a_reboot_is_stale_at_once() -> None:
    if not lock.boot_id():
        pytest.skip("no boot id here")
    assert stale_reason_here(here(boot="another-boot"), now=NOW) == (
        f"{HERE} rebooted since pid {os.getpid()} on {HERE} took it"
    )


def test_same_hostname_other_machine_id_here_is_judged_by_the_lease_only() -> None:
    other = here(machine="0" * 32, pid=dead_pid())
    assert stale_reason_here(other, now=NOW) is None
    assert stale_reason_here(other, now=NOW, age=LEASE_SECONDS + 1) is not None


def test_stale_reason_here_defaults_to_now() -> None:
    assert stale_reason_here(owner(control="elsewhere", started=time.time())) is None
    assert stale_reason_here(owner(control="elsewhere", started=time.time() - 2 * LEASE_SECONDS))


# ------------------------------------------------------------------ held-lock reports


def test_parse_held() -> None:
    text = owner().render()
    held = host_lock.parse_held(f"held 1000 400 {'c' * 64}\n{text}\n\n")
    assert (held.owner, held.text, held.age, held.sha256) == (owner(), text, 600.0, "c" * 64)
    empty = host_lock.parse_held(f"held 1000 400 {'c' * 64}\n\n")
    assert (empty.owner, empty.age, empty.sha256) == (None, 600.0, "c" * 64)
    assert "taking it right now (lock file empty)" in empty.describe()
    missing = host_lock.parse_held("held 1000 - \n")  # no file to read: no mtime, no sha
    assert (missing.owner, missing.age, missing.sha256) == (None, None, "")
    legacy = host_lock.parse_held(text)  # a bare owner line
    assert (legacy.owner, legacy.age, legacy.sha256) == (owner(), None, "")


# --------------------------------------------------------------- acquire (facts command)


def test_acquire_takes_a_free_lock_whole(lock_path: Path) -> None:
    me = new_owner("up")
    result = sh(acquire_script(me.render()))
    assert (result.returncode, result.stdout, result.stderr) == (0, "acquired\n", "")
    assert parse_owner(lock_path.read_text()) == me
    # No temp file is left; the guard stays (never removed: flock needs one inode).
    assert sorted(p.name for p in lock_path.parent.iterdir()) == [
        "etcd-deploy.lock",
        "etcd-deploy.lock.guard",
    ]


def test_acquire_reports_a_held_lock_with_host_time_mtime_and_sha(lock_path: Path) -> None:
    content = owner(run_id="theirs").render() + "\n"
    lock_path.write_text(content)
    os.utime(lock_path, (NOW, NOW))
    result = sh(acquire_script(owner(run_id="mine").render()))
    held = host_lock.parse_held(result.stdout)
    assert held.owner == owner(run_id="theirs")
    assert held.sha256 == sha(lock_path)
    assert held.age is not None and abs(held.age - (time.time() - NOW)) < 60
    assert lock_path.read_text() == content


@pytest.mark.parametrize("content", ["", '{"run": "half'])
def test_a_lock_being_written_is_not_stale(lock_path: Path, content: str) -> None:
    """An empty or half-written lock file (a run taking it with the old `printf >`) counts
    as held until it is older than the lease, by its mtime."""
    lock_path.write_text(content)
    held = host_lock.parse_held(sh(acquire_script(owner().render())).stdout)
    assert held.owner is None and held.sha256 == sha(lock_path)
    assert stale_reason_here(held.owner, age=held.age) is None
    old = time.time() - LEASE_SECONDS - 120
    os.utime(lock_path, (old, old))
    held = host_lock.parse_held(sh(acquire_script(owner().render())).stdout)
    assert stale_reason_here(held.owner, age=held.age) is not None


def spawn(scripts: list[str]) -> list[str]:
    """Run `scripts` at once (each its own sh) and return their outputs."""
    procs = [
        subprocess.Popen(["sh", "-c", s], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for s in scripts
    ]
    return [p.communicate()[0].decode() for p in procs]


def assert_one_winner(lock_path: Path, scripts: list[str], owners: list, won: str) -> None:
    """Run `scripts` at once: exactly one says `won`, the lock is its owner's, and every
    other script saw that owner holding it."""
    outputs = spawn(scripts)
    winners = [o for o, out in zip(owners, outputs, strict=True) if out == won]
    assert len(winners) == 1, outputs
    assert parse_owner(lock_path.read_text()) == winners[0]
    for out in outputs:
        if out != won:
            assert host_lock.parse_held(out).owner == winners[0]


def test_concurrent_acquires_one_wins(lock_path: Path) -> None:
    for _round in range(5):
        lock_path.unlink(missing_ok=True)
        owners = [owner(run_id=f"run{i}") for i in range(8)]
        scripts = [acquire_script(o.render()) for o in owners]
        assert_one_winner(lock_path, scripts, owners, "acquired\n")


# ------------------------------------------------------------ take-over: compare and swap


def test_takeover_refused_when_the_lock_changed(lock_path: Path) -> None:
    lock_path.write_text(owner(run_id="old").render() + "\n")
    judged = sha(lock_path)
    lock_path.write_text(owner(run_id="old").renew(NOW + 300).render() + "\n")  # renewed
    now_there = lock_path.read_text()
    result = sh(takeover_script(owner(run_id="new"), judged))
    assert result.returncode == 0
    held = host_lock.parse_held(result.stdout)
    assert held.owner == owner(run_id="old").renew(NOW + 300)
    assert lock_path.read_text() == now_there
    assert sorted(p.name for p in lock_path.parent.iterdir())[0] == "etcd-deploy.lock"
    assert len(list(lock_path.parent.iterdir())) == 2  # the lock and its guard: no temp file


def test_takeover_of_a_lock_let_go_meanwhile_takes_it(lock_path: Path) -> None:
    me = owner(run_id="new")
    assert sh(takeover_script(me, "0" * 64)).stdout == "taken\n"
    assert parse_owner(lock_path.read_text()) == me


def test_concurrent_takeovers_of_one_stale_lock_one_wins(lock_path: Path) -> None:
    """Two (here eight) runs judged the same stale lock: exactly one takes it over."""
    for _round in range(5):
        lock_path.write_text(owner(run_id="dead", started=NOW - 2 * LEASE_SECONDS).render())
        judged = sha(lock_path)
        owners = [owner(run_id=f"run{i}") for i in range(8)]
        scripts = [takeover_script(o, judged) for o in owners]
        assert_one_winner(lock_path, scripts, owners, "taken\n")


def test_takeover_through_gather_facts_logic_refuses_the_loser(
    lock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hosts.take_over` for two runs that read the same stale lock: the first takes it,
    the second is refused (exit 5) naming the first."""
    from orchestrator.core.errors import SafetyRefusal
    from orchestrator.engine import hosts

    class Conn:
        name = "etcd1"

        def run(self, script: str, **_kw: object) -> subprocess.CompletedProcess[str]:
            return sh(script)

    class Ctx:
        class ui:
            warnings: ClassVar[list[str]] = []

            @classmethod
            def warn(cls, _where: str, message: str) -> None:
                cls.warnings.append(message)

    dead = owner(control=HERE, pid=dead_pid(), run_id="dead")
    lock_path.write_text(dead.render() + "\n")
    first, second = new_owner("up"), new_owner("upgrade")
    report_first = sh(acquire_script(first.render())).stdout
    report_second = sh(acquire_script(second.render())).stdout
    assert report_first == report_second  # both saw the dead run's lock
    hosts.take_over(Ctx, Conn(), first, report_first)  # type: ignore[arg-type]
    assert parse_owner(lock_path.read_text()) == first
    with pytest.raises(SafetyRefusal) as refused:
        hosts.take_over(Ctx, Conn(), second, report_second)  # type: ignore[arg-type]
    assert refused.value.exit_code == 5
    assert "locked by another etcd-deploy run" in str(refused.value)
    assert f"pid {first.pid}" in str(refused.value)
    assert parse_owner(lock_path.read_text()) == first
    assert any("taking over a stale lock" in w for w in Ctx.ui.warnings)
    # The same run reading its facts again finds its own lock: nothing to take over.
    hosts.take_over(Ctx, Conn(), first, sh(acquire_script(first.render())).stdout)  # type: ignore[arg-type]


def test_a_live_lock_is_refused_not_taken(lock_path: Path) -> None:
    from orchestrator.core.errors import SafetyRefusal
    from orchestrator.engine import hosts

    class Conn:
        name = "etcd1"

        def run(self, script: str, **_kw: object) -> subprocess.CompletedProcess[str]:
            raise AssertionError("no take-over may run")

    lock_path.write_text(new_owner("up").render() + "\n")  # this live process
    report = sh(acquire_script(new_owner("plan").render())).stdout
    with pytest.raises(SafetyRefusal, match="locked by another etcd-deploy run"):
        hosts.take_over(None, Conn(), new_owner("plan"), report)  # type: ignore[arg-type]


# --------------------------------------------------------------------- guard, refresh


def test_a_busy_guard_is_an_error_not_a_lock(
    lock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_lock, "GUARD_WAIT", 1)
    fd = os.open(f"{lock_path}.guard", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        out = sh(acquire_script(owner().render())).stdout
    finally:
        os.close(fd)
    assert out.startswith("error cannot lock") and not lock_path.exists()
    assert sh(acquire_script(owner().render())).stdout == "acquired\n"


def test_refresh_rewrites_only_our_lock(lock_path: Path) -> None:
    me = owner(run_id="0a1b2c3d4e5f")
    lock_path.write_text(me.render() + "\n")
    old = time.time() - 1000
    os.utime(lock_path, (old, old))
    assert sh(refresh_script(me.renew(NOW + 600))).stdout == "renewed\n"
    assert parse_owner(lock_path.read_text()) == me.renew(NOW + 600)
    assert lock_path.stat().st_mtime > old + 900  # the host sees it renewed too
    theirs = owner(run_id="0a1b2c3d4e5").render() + "\n"  # a prefix of ours
    lock_path.write_text(theirs)
    out = sh(refresh_script(me.renew(NOW + 900))).stdout
    assert host_lock.parse_held(out).owner == owner(run_id="0a1b2c3d4e5")
    assert lock_path.read_text() == theirs


def test_refresh_never_brings_a_lock_back(lock_path: Path) -> None:
    me = owner()
    lock_path.write_text(me.render() + "\n")
    assert sh(remove_script()).returncode == 0
    assert not lock_path.exists()
    assert sh(refresh_script(me.renew(NOW + 300))).stdout == "gone\n"
    assert not lock_path.exists()


# ------------------------------------------------------------------- LeaseRefresher


class FakeRenew:
    def __init__(self, answers: dict[str, str] | None = None) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.answers = answers or {}

    def __call__(self, who: LockOwner, names: list[str]) -> dict[str, str]:
        self.calls.append((who.run_id, sorted(names)))
        return {n: self.answers.get(n, "renewed") for n in names}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refresher(
    renew: FakeRenew, clock: Clock, warnings: list[str] | None = None
) -> lock.LeaseRefresher:
    return lock.LeaseRefresher(
        renew,
        clock=clock,
        threaded=False,
        warn=lambda host, message: (warnings if warnings is not None else []).append(
            f"{host}: {message}"
        ),
    )


def test_renewals_come_every_renew_seconds_well_within_the_lease() -> None:
    assert RENEW_SECONDS * 10 <= LEASE_SECONDS
    renew, clock = FakeRenew(), Clock()
    leases = refresher(renew, clock)
    me = owner(run_id="me")
    leases.hold(me, ["etcd1", "etcd2"])
    assert leases.tick() == RENEW_SECONDS and renew.calls == []
    clock.now += RENEW_SECONDS - 1
    assert leases.tick() == 1 and renew.calls == []
    # A 61-minute run: renewed on time, every time; never a gap near the lease.
    renewed_at = []
    for _step in range(61 * 60):
        clock.now += 1
        before = len(renew.calls)
        leases.tick()
        if len(renew.calls) > before:
            renewed_at.append(clock.now)
    assert renew.calls[0] == ("me", ["etcd1", "etcd2"])
    gaps = [b - a for a, b in zip([1000.0, *renewed_at], renewed_at, strict=False)]
    assert gaps and max(gaps) == RENEW_SECONDS
    leases.drop(me, ["etcd1", "etcd2"])
    assert leases.tick() is None and leases.holding() == {}


def test_a_failed_renewal_is_retried_soon_and_warned() -> None:
    warnings: list[str] = []
    renew, clock = FakeRenew({"etcd2": "error timeout"}), Clock()
    leases = refresher(renew, clock, warnings)
    leases.hold(owner(), ["etcd1", "etcd2"])
    clock.now += RENEW_SECONDS
    assert leases.tick() == lock.RETRY_SECONDS
    assert leases.holding() == {
        "etcd1": clock.now + RENEW_SECONDS,
        "etcd2": clock.now + lock.RETRY_SECONDS,
    }
    assert warnings == ["etcd2: could not renew the run lock (retrying): error timeout"]
    renew.answers.clear()
    clock.now += lock.RETRY_SECONDS
    leases.tick()
    assert renew.calls[-1] == ("run1", ["etcd2"])


def test_a_lock_gone_or_taken_is_no_longer_renewed() -> None:
    warnings: list[str] = []
    taken = f"held 1 1 {'a' * 64}\n" + owner(run_id="thief").render()
    renew, clock = FakeRenew({"etcd1": "gone", "etcd2": taken}), Clock()
    leases = refresher(renew, clock, warnings)
    leases.hold(owner(), ["etcd1", "etcd2", "etcd3"])
    clock.now += RENEW_SECONDS
    leases.tick()
    assert list(leases.holding()) == ["etcd3"]
    assert len(warnings) == 1 and warnings[0].startswith("etcd2: this run's lock was taken over")


def test_an_answer_for_a_lock_let_go_meanwhile_is_ignored() -> None:
    warnings: list[str] = []
    clock = Clock()
    me = owner()

    def renew(who: LockOwner, names: list[str]) -> dict[str, str]:
        leases.drop(who, names)  # released while the renewal was on its way
        return {n: "error connection closed" for n in names}

    leases = refresher(renew, clock, warnings)  # type: ignore[arg-type]
    leases.hold(me, ["etcd1"])
    clock.now += RENEW_SECONDS
    assert leases.tick() is None
    assert warnings == []


def test_a_renewal_that_raises_is_retried() -> None:
    clock = Clock()

    def renew(_who: LockOwner, _names: list[str]) -> dict[str, str]:
        raise OSError("boom")

    leases = refresher(renew, clock)  # type: ignore[arg-type]
    leases.hold(owner(), ["etcd1"])
    clock.now += RENEW_SECONDS
    assert leases.tick() == lock.RETRY_SECONDS


def test_the_thread_renews_and_ends_when_the_locks_are_let_go() -> None:
    renew = FakeRenew()
    leases = lock.LeaseRefresher(renew, every=0.02, retry=0.02)
    me = owner()
    leases.hold(me, ["etcd1"])
    assert leases.running
    deadline = time.monotonic() + 5
    while len(renew.calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(renew.calls) >= 3
    leases.drop(me, ["etcd1"])
    deadline = time.monotonic() + 5
    while leases.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not leases.running
    calls = len(renew.calls)
    time.sleep(0.1)
    assert len(renew.calls) == calls  # nothing renewed after the release
    leases.hold(me, ["etcd2"])  # a later hold starts it again
    assert leases.running
    leases.stop()
    assert not leases.running


def test_renew_locks_runs_the_refresh_beside_the_run(lock_path: Path) -> None:
    """`hosts.renew_locks`: the refresh script as a side command on each open connection;
    no pool open (between a reload and the next command): an error, retried later."""
    from orchestrator.adapters.transport import HostResult
    from orchestrator.engine import hosts

    sides: list[bool] = []

    class Conn:
        def run(self, script: str, **kw: object) -> subprocess.CompletedProcess[str]:
            sides.append(bool(kw.get("side")))
            return sh(script)

    class Pool:
        connections = {"etcd1": Conn()}  # noqa: RUF012 - a stand-in

        def map(self, fn: Any, names: list[str]) -> dict[str, HostResult[str]]:
            return {n: HostResult(n, value=fn(self.connections[n])) for n in names}

    class Ctx:
        pool: Pool | None = Pool()

        def open_pool(self) -> Pool | None:
            return self.pool

    me = new_owner("upgrade")
    lock_path.write_text(me.render() + "\n")
    ctx = Ctx()
    answers = hosts.renew_locks(ctx, me, ["etcd1", "etcd9"])  # type: ignore[arg-type]
    assert answers == {"etcd1": "renewed", "etcd9": "gone"}  # etcd9: left the inventory
    assert sides == [True]
    renewed = parse_owner(lock_path.read_text())
    assert renewed is not None and renewed.run_id == me.run_id
    assert renewed.renewed is not None and renewed.renewed >= me.started
    ctx.pool = None
    assert hosts.renew_locks(ctx, me, ["etcd1"])["etcd1"].startswith("error ")
