"""Run locks: one etcd-deploy run at a time per host (k0sctl's idea) and per state dir.

The host lock is a file in /run (gone after a reboot) holding who took it. It is taken by
the facts command (`set -C` makes the create atomic) and let go at the end of the run. A
lock is stale when its run is dead: the same control machine and a pid that no longer
runs, or older than LEASE_SECONDS from anywhere.

The state lock guards the control machine's state dir (CA, certs, inventory edits), which
a run changes before it reaches any host: two runs that both found no CA would each make
one. It is an flock, so the kernel lets go of it when its process dies: never stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import SafetyRefusal

LOCK_PATH = "/run/etcd-deploy.lock"
LEASE_SECONDS = 3600
STATE_LOCK_NAME = ".etcd-deploy.lock"


@dataclass(frozen=True)
class LockOwner:
    run_id: str
    control: str
    pid: int
    command: str
    started: float

    def render(self) -> str:
        return json.dumps(
            {
                "run": self.run_id,
                "control": self.control,
                "pid": self.pid,
                "command": self.command,
                "started": int(self.started),
            }
        )

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"`{self.command}` (pid {self.pid} on {self.control}, since {when})"


def new_owner(command: str) -> LockOwner:
    return LockOwner(uuid.uuid4().hex[:12], socket.gethostname(), os.getpid(), command, time.time())


def parse_owner(text: str) -> LockOwner | None:
    try:
        data = json.loads(text.strip().splitlines()[0])
        return LockOwner(
            str(data["run"]),
            str(data["control"]),
            int(data["pid"]),
            str(data.get("command", "?")),
            float(data["started"]),
        )
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(owner: LockOwner | None, now: float | None = None) -> str | None:
    """Why a lock held by `owner` may be taken over, or None when its run may be alive."""
    if owner is None:
        return "unreadable lock file"
    now = time.time() if now is None else now
    if owner.control == socket.gethostname() and not _pid_alive(owner.pid):
        return f"pid {owner.pid} on {owner.control} is gone"
    if now - owner.started > LEASE_SECONDS:
        return f"older than {LEASE_SECONDS // 60} minutes"
    return None


def takeover_script(owner: LockOwner) -> str:
    import shlex

    return f"printf '%s\\n' {shlex.quote(owner.render())} > {LOCK_PATH}"


def release_script(owner: LockOwner) -> str:
    """Remove the lock only if it is still ours."""
    return (
        f'grep -qF \'"run": "{owner.run_id}"\' {LOCK_PATH} 2>/dev/null && rm -f {LOCK_PATH}; true'
    )


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
