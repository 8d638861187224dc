"""The systemd units etcd-deploy installs on a host, and every systemctl/journalctl command
it runs on them (pure: command text only; the engine and the commands run it).

The unit's name is spelled here once; the unit files' paths are `host_paths`'.
"""

from __future__ import annotations

UNIT = "etcd.service"
# Scheduled backups: a oneshot service and the timer that starts it (same name).
BACKUP_SERVICE = "etcd-backup.service"
BACKUP_TIMER = "etcd-backup.timer"

# After a unit file was written or removed.
DAEMON_RELOAD = "systemctl daemon-reload"

# Writing the unit is always followed by a daemon-reload, so enabling needs no reload of
# its own (each costs systemd about 0.1 s of CPU per host).
ENABLE = f"systemctl enable --quiet --no-reload {UNIT}"


def enable_and(verb: str) -> str:
    """Enable the unit, then `verb` ("start" or "restart") it without waiting for systemd."""
    return f"{ENABLE} && systemctl {verb} --no-block {UNIT}"


START_NOW = enable_and("start")
START_NO_BLOCK = f"systemctl start --no-block {UNIT}"  # started, its enablement left alone
STOP_IF_RUNNING = f"systemctl stop {UNIT} 2>/dev/null || true"
DISABLE_NOW = f"systemctl disable --now {UNIT}"

# What the engine reads of the unit: the running process's identity while it starts, and
# the facts (`facts.facts_script`).
SHOW_INVOCATION_ID = f"systemctl show -p InvocationID --value {UNIT}"
SHOW_STATE = f"systemctl show -p ActiveState -p SubState -p InvocationID {UNIT}"
SHOW_FACTS = (
    f"systemctl show {UNIT} -p LoadState -p ActiveState -p UnitFileState -p ActiveEnterTimestamp"
)


def journal(lines: int = 200) -> str:
    """The member's last `lines` journal lines, messages only."""
    return f"journalctl -u {UNIT} -n {lines} --no-pager -o cat"


# Teardown (destroy, remove-node): stop and disable the unit and the backup timer; forget a
# failed state, once the unit files are gone and systemd reloaded.
DISABLE_ALL = f"systemctl disable --now {UNIT} {BACKUP_TIMER} >/dev/null 2>&1 || true"
RESET_FAILED = f"systemctl reset-failed {UNIT} >/dev/null 2>&1 || true"

# `backup schedule`: the timer on (restarted, so a changed schedule applies now) or off.
BACKUP_TIMER_ON = (
    f"systemctl enable --quiet --now {BACKUP_TIMER} && systemctl restart {BACKUP_TIMER}"
)
BACKUP_TIMER_OFF = f"systemctl disable --now {BACKUP_TIMER} >/dev/null 2>&1 || true"
