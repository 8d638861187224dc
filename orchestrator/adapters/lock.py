"""Run locks: one etcd-deploy run at a time per host (k0sctl's idea) and per state dir.

The host lock is a file in /run (gone after a reboot) holding who took it: one JSON line
with the control machine (machine id, hostname, boot id), the pid and its start time (a
reused pid is told apart), the run id, the command, when it started and when it was last
renewed. Every change to it happens under `flock` on a side file (`<lock>.guard`, never
removed), so that no check-then-write can interleave with another run's:

- take: the content goes to a temp file next to the lock, then `ln` (a hard link fails when
  the lock exists): the lock file never exists without its whole content;
- take over a stale lock: only when the lock still has the sha256 this run judged stale
  (compare, then rename over it); otherwise the run is refused;
- renew: while a run holds host locks, `LeaseRefresher` rewrites them every RENEW_SECONDS
  (only where the lock is still ours), so a long run never looks stale;
- let go: removed only when it is still ours.

A lock is stale when its run is dead: on the same control machine, its pid is gone or is
another process now (another start time, or the machine rebooted); from anywhere, when the
file has not changed for LEASE_SECONDS (by the host's clock). An empty or unreadable lock
file is somebody taking it right now: held, until it too is older than the lease.

The state lock guards the control machine's state dir (CA, certs, inventory edits), which
a run changes before it reaches any host: two runs that both found no CA would each make
one. It is an flock, so the kernel lets go of it when its process dies: never stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.errors import SafetyRefusal

LOCK_PATH = "/run/etcd-deploy.lock"
LEASE_SECONDS = 3600
RENEW_SECONDS = 300  # a lease of 3600 s sees 11 renewals go by before it could run out
RETRY_SECONDS = 30  # after a renewal that failed (host unreachable for a moment)
GUARD_WAIT = 10  # seconds to wait for another run's lock command to finish
STATE_LOCK_NAME = ".etcd-deploy.lock"
MAX_SHOWN = 4096  # bytes of somebody else's lock file read back


@dataclass(frozen=True)
class LockOwner:
    run_id: str
    control: str  # the control machine's hostname, for people
    pid: int
    command: str
    started: float
    machine: str = ""  # /etc/machine-id (the hostname where there is none)
    pid_start: int | None = None  # the pid's start time, in clock ticks after boot
    boot: str = ""  # the control machine's boot id
    renewed: float | None = None

    @property
    def last_renewed(self) -> float:
        return self.started if self.renewed is None else self.renewed

    def render(self) -> str:
        data: dict[str, object] = {
            "run": self.run_id,
            "control": self.control,
            "pid": self.pid,
            "command": self.command,
            "started": int(self.started),
        }
        if self.machine:
            data["machine"] = self.machine
        if self.pid_start is not None:
            data["pid_start"] = self.pid_start
        if self.boot:
            data["boot"] = self.boot
        if self.renewed is not None:
            data["renewed"] = int(self.renewed)
        return json.dumps(data)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        text = f"`{self.command}` (pid {self.pid} on {self.control}, since {when}"
        if self.renewed is not None and int(self.renewed) - int(self.started) >= 60:
            text += ", renewed " + time.strftime("%H:%M:%S UTC", time.gmtime(self.renewed))
        return text + ")"

    def renew(self, now: float | None = None) -> LockOwner:
        """The same owner, renewed at `now`."""
        return dataclasses.replace(self, renewed=time.time() if now is None else now)


def _read_first_line(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.readline().strip()
    except OSError:
        return ""


def machine_id() -> str:
    """This machine's id (/etc/machine-id), or its hostname where that is unreadable."""
    return _read_first_line("/etc/machine-id") or socket.gethostname()


def boot_id() -> str:
    return _read_first_line("/proc/sys/kernel/random/boot_id")


def process_start(pid: int) -> int | None:
    """The start time of `pid` (clock ticks after boot, /proc/<pid>/stat field 22), or None
    when it cannot be read (no such process, or no /proc)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(errors="replace")
        # The command name (field 2) is in parentheses and may hold spaces or ')'.
        return int(text[text.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def new_owner(command: str) -> LockOwner:
    now = float(int(time.time()))  # whole seconds, as the lock file says
    pid = os.getpid()
    return LockOwner(
        uuid.uuid4().hex[:12],
        socket.gethostname(),
        pid,
        command,
        now,
        machine=machine_id(),
        pid_start=process_start(pid),
        boot=boot_id(),
        renewed=now,
    )


def parse_owner(text: str) -> LockOwner | None:
    """The owner in a lock file's text (or in a `held` report, see `parse_held`)."""
    try:
        lines = text.strip().splitlines()
        if lines and lines[0].startswith("held "):
            lines = lines[1:]
        data = json.loads(lines[0])
        pid_start = data.get("pid_start")
        renewed = data.get("renewed")
        return LockOwner(
            str(data["run"]),
            str(data["control"]),
            int(data["pid"]),
            str(data.get("command", "?")),
            float(data["started"]),
            machine=str(data.get("machine") or ""),
            pid_start=None if pid_start is None else int(pid_start),
            boot=str(data.get("boot") or ""),
            renewed=None if renewed is None else float(renewed),
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class HeldLock:
    """Somebody's lock as a lock command reported it (`held <now> <mtime> <sha256>`, then
    the file's first bytes)."""

    owner: LockOwner | None
    text: str
    age: float | None  # seconds since the file last changed, by the host's clock
    sha256: str  # "" when the file could not be read

    def describe(self) -> str:
        if self.owner is not None:
            return self.owner.describe()
        shown = self.text.strip().replace("\n", " ")[:80]
        return f"a run taking it right now (lock file {'empty' if not shown else repr(shown)})"


def parse_held(body: str) -> HeldLock:
    lines = body.strip("\n").split("\n")
    age: float | None = None
    sha = ""
    if lines and lines[0].startswith("held "):
        fields = [*lines[0].split()[1:], "", "", ""]
        if fields[0].isdigit() and fields[1].isdigit():
            age = float(int(fields[0]) - int(fields[1]))
        sha = fields[2] if len(fields[2]) == 64 else ""
        lines = lines[1:]
    text = "\n".join(lines).strip()
    return HeldLock(parse_owner(text), text, age, sha)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _same_machine(owner: LockOwner) -> bool:
    """Whether `owner` ran on this machine (same machine id and hostname: containers made
    from one image may share a machine id; a mismatch only means "judge by the lease")."""
    if owner.control != socket.gethostname():
        return False
    return not owner.machine or owner.machine == machine_id()


def stale_reason(
    owner: LockOwner | None, now: float | None = None, *, age: float | None = None
) -> str | None:
    """Why a lock held by `owner` may be taken over, or None when its run may be alive.

    `age`: seconds since the lock file last changed, by the host's clock (the owner's
    `renewed` time, by this machine's clock, when unknown). An unreadable lock file (None)
    is stale only by its age.
    """
    lease = f"not renewed for over {LEASE_SECONDS // 60} minutes"
    if owner is None:
        if age is not None and age > LEASE_SECONDS:
            return f"unreadable lock file, {lease}"
        return None
    if _same_machine(owner):
        where = f"pid {owner.pid} on {owner.control}"
        if owner.boot and boot_id() and owner.boot != boot_id():
            return f"{owner.control} rebooted since {where} took it"
        if not _pid_alive(owner.pid):
            return f"{where} is gone"
        start = process_start(owner.pid)
        if owner.pid_start is not None and start is not None and start != owner.pid_start:
            return f"{where} is another process now"
    if age is None:
        age = (time.time() if now is None else now) - owner.last_renewed
    if age > LEASE_SECONDS:
        return lease
    return None


# --------------------------------------------------------------------------- host scripts
# Every script runs in a subshell that holds `flock` on `<lock>.guard` for its few commands;
# it prints one answer line (and, for `held`, the lock file's first bytes).


def _guarded(path: str, body: str, *, on_busy: str) -> str:
    guard = shlex.quote(path + ".guard")
    return (
        f"( exec 9>>{guard} && flock -w {GUARD_WAIT} 9 || exit 75\n"
        f'lk={shlex.quote(path)}; lt="$lk.new.$$"\n'
        f"{body}\n"
        "exit 0 ) 2>/dev/null || echo " + shlex.quote(on_busy)
    )


# What a lock command prints about somebody else's lock: the host's time, the file's mtime,
# its sha256, then its first bytes.
_HELD = (
    'echo "held $(date +%s) $(stat -c %Y "$lk" || echo -) '
    '$(sha256sum < "$lk" | cut -c1-64)"; '
    f'head -c {MAX_SHOWN} "$lk"; echo'
)


def _write_temp(owner_text: str) -> str:
    return f"printf '%s\\n' {shlex.quote(owner_text)} > \"$lt\""


def _path(path: str | None) -> str:
    return LOCK_PATH if path is None else path


def acquire_script(content: str, path: str | None = None) -> str:
    """Take the lock when free (prints `acquired`), else report who holds it (`held ...`).

    The lock's content is written to a temp file first, then hard-linked into place: the
    lock file never exists without its whole content."""
    p = _path(path)
    body = (
        f'if {_write_temp(content)} && ln -T "$lt" "$lk"; then echo acquired; '
        f"else {_HELD}; fi\n"
        'rm -f "$lt"'
    )
    return _guarded(p, body, on_busy=f"error cannot lock {p}.guard (flock)")


def takeover_script(owner: LockOwner, expected_sha256: str, path: str | None = None) -> str:
    """Replace a stale lock with ours, only when it still has the sha256 we judged (prints
    `taken`); a lock gone meanwhile is simply taken. Else reports the lock now there."""
    p = _path(path)
    expected = shlex.quote(expected_sha256)
    body = (
        f'if ! {_write_temp(owner.render())}; then echo "error cannot write $lt"; '
        'elif ln -T "$lt" "$lk"; then echo taken; '
        f'elif [ "$(sha256sum < "$lk" | cut -c1-64)" = {expected} ] && mv -fT "$lt" "$lk"; '
        "then echo taken; "
        f"else {_HELD}; fi\n"
        'rm -f "$lt"'
    )
    return _guarded(p, body, on_busy=f"error cannot lock {p}.guard (flock)")


def _ours(owner: LockOwner) -> str:
    return f'grep -qF {shlex.quote(json.dumps({"run": owner.run_id})[1:-1])} "$lk"'


def refresh_script(owner: LockOwner, path: str | None = None) -> str:
    """Rewrite the lock with `owner` (renewed), only when it is still ours. Prints
    `renewed`, `gone` (no lock: let go, or removed with the rest), or `held ...`."""
    p = _path(path)
    body = (
        'if [ ! -e "$lk" ]; then echo gone; '
        f"elif ! {_ours(owner)}; then {_HELD}; "
        f'elif {_write_temp(owner.render())} && mv -fT "$lt" "$lk"; then echo renewed; '
        'else rm -f "$lt"; echo "error cannot write $lk"; fi'
    )
    return _guarded(p, body, on_busy=f"error cannot lock {p}.guard (flock)")


def release_script(owner: LockOwner, path: str | None = None) -> str:
    """Remove the lock only if it is still ours."""
    body = f'{_ours(owner)} && rm -f "$lk"'
    return _guarded(_path(path), body, on_busy="busy") + "; true"


def remove_script(path: str | None = None) -> str:
    """Remove the lock whoever holds it (destroy's last step), under the guard all the same:
    a renewal in flight cannot bring it back."""
    return _guarded(_path(path), 'rm -f "$lk"', on_busy="busy") + "; true"


# --------------------------------------------------------------------------- lease renewal

# (owner, host names) -> what each host said: "renewed", "gone", "held ..." or an error.
Renew = Callable[[LockOwner, list[str]], dict[str, str]]


class LeaseRefresher:
    """Renews the host locks a run holds, every `every` seconds, from a daemon thread that
    runs only while some lock is held. `tick` does one round (tests call it with a fake
    clock); renewal results for locks let go of meanwhile are ignored."""

    def __init__(
        self,
        renew: Renew,
        *,
        every: float = RENEW_SECONDS,
        retry: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        warn: Callable[[str, str], None] = lambda _host, _message: None,
        threaded: bool = True,
    ) -> None:
        self._renew = renew
        self._every = every
        self._retry = retry
        self._clock = clock
        self._warn = warn
        self._threaded = threaded
        self._due: dict[tuple[str, str], tuple[LockOwner, float]] = {}
        self._mutex = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def holding(self) -> dict[str, float]:
        """Host name -> when its renewal is due (clock time)."""
        with self._mutex:
            return {name: due for (_run, name), (_o, due) in self._due.items()}

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def hold(self, owner: LockOwner, names: Iterable[str]) -> None:
        now = self._clock()
        with self._mutex:
            for name in names:
                self._due[(owner.run_id, name)] = (owner, now + self._every)
            if self._due and self._threaded and self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="etcd-deploy-lease", daemon=True
                )
                self._thread.start()

    def drop(self, owner: LockOwner, names: Iterable[str]) -> None:
        with self._mutex:
            for name in names:
                self._due.pop((owner.run_id, name), None)
        self._wake.set()  # the thread ends when nothing is held

    def stop(self, timeout: float = 5) -> None:
        with self._mutex:
            self._due.clear()
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def tick(self, now: float | None = None) -> float | None:
        """Renew every lock that is due; seconds until the next is due (None: none held)."""
        now = self._clock() if now is None else now
        with self._mutex:
            groups: dict[str, tuple[LockOwner, list[str]]] = {}
            for (run, name), (owner, due) in self._due.items():
                if due <= now:
                    groups.setdefault(run, (owner, []))[1].append(name)
        for run, (owner, names) in groups.items():
            try:
                answers = self._renew(owner, names)
            except Exception as exc:  # a renewal never ends the run
                answers = {name: f"error {exc}" for name in names}
            with self._mutex:
                for name in names:
                    key = (run, name)
                    if key not in self._due:
                        continue  # let go of meanwhile: whatever the answer, it is moot
                    answer = answers.get(name, "error no answer")
                    if answer == "renewed":
                        self._due[key] = (owner, now + self._every)
                    elif answer == "gone":
                        del self._due[key]  # removed with the rest (destroy): nothing to renew
                    elif answer.startswith("held"):
                        del self._due[key]
                        held = parse_held(answer)
                        self._warn(
                            name,
                            "this run's lock was taken over by another run, "
                            f"{held.describe()}: the two runs may now interfere",
                        )
                    else:
                        self._due[key] = (owner, now + self._retry)
                        self._warn(name, f"could not renew the run lock (retrying): {answer}")
        with self._mutex:
            if not self._due:
                return None
            return max(0.0, min(due for _o, due in self._due.values()) - self._clock())

    def _loop(self) -> None:
        while True:
            with self._mutex:
                if not self._due:
                    self._thread = None
                    return
            try:
                delay = self.tick()
            except Exception:  # keep renewing whatever a round did
                delay = self._retry
            if delay is None:
                continue  # checked again under the mutex
            self._wake.wait(delay)
            self._wake.clear()


class StateLock:
    """The control machine's lock on one state dir, held by this process until `release`."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / STATE_LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, owner: LockOwner) -> None:
        """Take the lock for `owner`, or refuse when another live run holds it."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = parse_owner(os.read(fd, 4096).decode(errors="replace"))
            os.close(fd)
            who = holder.describe() if holder else "a run that is just starting"
            raise SafetyRefusal(
                f"{self.path.parent}: locked by another etcd-deploy run, {who}; "
                "wait for it to finish (this lock goes with its process)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, (owner.render() + "\n").encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the last descriptor drops the flock
        self._fd = None
