"""The per-host run lock, pure: one etcd-deploy run at a time per host (k0sctl's idea).

The host lock is a file in /run (gone after a reboot) holding who took it: one JSON line
with the control machine (machine id, hostname, boot id), the pid and its start time (a
reused pid is told apart), the run id, the command, when it started and when it was last
renewed. Every change to it happens under `flock` on a side file (`<lock>.guard`, never
removed), so that no check-then-write can interleave with another run's:

- take: the content goes to a temp file next to the lock, then `ln` (a hard link fails when
  the lock exists): the lock file never exists without its whole content;
- take over a stale lock: only when the lock still has the sha256 this run judged stale
  (compare, then rename over it); otherwise the run is refused;
- renew: while a run holds host locks, it rewrites them every RENEW_SECONDS (only where the
  lock is still ours; `adapters.lock.LeaseRefresher`), so a long run never looks stale;
- let go: removed only when it is still ours.

A lock is stale when its run is dead: on the same control machine, its pid is gone or is
another process now (another start time, or the machine rebooted); from anywhere, when the
file has not changed for LEASE_SECONDS (by the host's clock). An empty or unreadable lock
file is somebody taking it right now: held, until it too is older than the lease.

Here: the owner record, its parsing, the staleness rule and the shell scripts. Reading this
machine's ids, the clock and processes is `orchestrator.adapters.lock`'s.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from dataclasses import dataclass

from orchestrator.core.host_paths import LOCK_PATH, guard_path

LEASE_SECONDS = 3600
RENEW_SECONDS = 300  # a lease of 3600 s sees 11 renewals go by before it could run out
GUARD_WAIT = 10  # seconds to wait for another run's lock command to finish
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

    def renew(self, now: float) -> LockOwner:
        """The same owner, renewed at `now`."""
        return dataclasses.replace(self, renewed=now)


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


# --------------------------------------------------------------------------- staleness


@dataclass(frozen=True)
class LocalView:
    """What the control machine judging a lock knows: its own hostname, machine id and boot
    id, and, when the owner ran on this machine, whether the owner's pid is alive and when
    that pid started. Read by `adapters.lock.local_view`."""

    hostname: str
    machine: str = ""  # this machine's id ("" when unknown)
    boot: str = ""  # this machine's boot id ("" when unknown)
    pid_alive: bool = True  # the owner's pid runs here (True when not looked at)
    pid_start: int | None = None  # the start time of the owner's pid here (None: unknown)


def same_machine(owner: LockOwner, here: LocalView) -> bool:
    """Whether `owner` ran on this machine (same machine id and hostname: containers made
    from one image may share a machine id; a mismatch only means "judge by the lease")."""
    if owner.control != here.hostname:
        return False
    return not owner.machine or owner.machine == here.machine


def stale_reason(
    owner: LockOwner | None, now: float, *, here: LocalView, age: float | None = None
) -> str | None:
    """Why a lock held by `owner` may be taken over at `now`, judged from the control
    machine `here`, or None when its run may be alive.

    `age`: seconds since the lock file last changed, by the host's clock (the owner's
    `renewed` time, by this machine's clock, when unknown). An unreadable lock file (None)
    is stale only by its age.
    """
    lease = f"not renewed for over {LEASE_SECONDS // 60} minutes"
    if owner is None:
        if age is not None and age > LEASE_SECONDS:
            return f"unreadable lock file, {lease}"
        return None
    if same_machine(owner, here):
        where = f"pid {owner.pid} on {owner.control}"
        if owner.boot and here.boot and owner.boot != here.boot:
            return f"{owner.control} rebooted since {where} took it"
        if not here.pid_alive:
            return f"{where} is gone"
        start = here.pid_start
        if owner.pid_start is not None and start is not None and start != owner.pid_start:
            return f"{where} is another process now"
    if age is None:
        age = now - owner.last_renewed
    if age > LEASE_SECONDS:
        return lease
    return None


# --------------------------------------------------------------------------- host scripts
# Every script runs in a subshell that holds `flock` on `<lock>.guard` for its few commands;
# it prints one answer line (and, for `held`, the lock file's first bytes).


def _guarded(path: str, body: str, *, on_busy: str) -> str:
    guard = shlex.quote(guard_path(path))
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
    return _guarded(p, body, on_busy=f"error cannot lock {guard_path(p)} (flock)")


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
    return _guarded(p, body, on_busy=f"error cannot lock {guard_path(p)} (flock)")


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
    return _guarded(p, body, on_busy=f"error cannot lock {guard_path(p)} (flock)")


def release_script(owner: LockOwner, path: str | None = None) -> str:
    """Remove the lock only if it is still ours."""
    body = f'{_ours(owner)} && rm -f "$lk"'
    return _guarded(_path(path), body, on_busy="busy") + "; true"


def remove_script(path: str | None = None) -> str:
    """Remove the lock whoever holds it (destroy's last step), under the guard all the same:
    a renewal in flight cannot bring it back."""
    return _guarded(_path(path), 'rm -f "$lk"', on_busy="busy") + "; true"
