"""Run locks, their I/O: this machine's ids and processes, the lease renewal of host locks,
and the state dir's lock.

The host lock itself (its owner record, staleness rule and shell scripts) is pure, in
`orchestrator.core.host_lock`; here is what it needs from this machine: `new_owner` (this
process, read from /proc and /etc/machine-id) and `local_view` (what `stale_reason` judges
by), and `LeaseRefresher`, which renews the host locks a run holds every RENEW_SECONDS.

The state lock guards the control machine's state dir (CA, certs, inventory edits), which
a run changes before it reaches any host: two runs that both found no CA would each make
one. It is an flock, so the kernel lets go of it when its process dies: never stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from orchestrator.core.errors import SafetyRefusal
from orchestrator.core.host_lock import (
    RENEW_SECONDS,
    LocalView,
    LockOwner,
    parse_held,
    parse_owner,
    same_machine,
    stale_reason,
)

RETRY_SECONDS = 30  # after a renewal that failed (host unreachable for a moment)
STATE_LOCK_NAME = ".etcd-deploy.lock"


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_view(owner: LockOwner | None) -> LocalView:
    """This machine as `host_lock.stale_reason` judges `owner` by: its ids, and the owner's
    pid here when the owner ran on this machine (looked at only then)."""
    here = LocalView(socket.gethostname(), machine=machine_id(), boot=boot_id())
    if owner is None or not same_machine(owner, here):
        return here
    return dataclasses.replace(
        here, pid_alive=_pid_alive(owner.pid), pid_start=process_start(owner.pid)
    )


def stale_reason_here(
    owner: LockOwner | None, now: float | None = None, *, age: float | None = None
) -> str | None:
    """`host_lock.stale_reason` judged on this machine, at `now` (this machine's clock by
    default)."""
    when = time.time() if now is None else now
    return stale_reason(owner, when, here=local_view(owner), age=age)


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
