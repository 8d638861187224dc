"""The systemd service and timer that run `etcd-deploy backup --to ...` on an operations
machine (pure: text only). `etcd-deploy backup timer` prints them.

The CA key, the inventory and the store's credentials live on that machine, not on the etcd
hosts, so the off-site backups run there. The service is a oneshot: a failed backup leaves
it failed (`systemctl --failed`, `systemctl show -p Result,ExecMainStatus`) with
etcd-deploy's exit code (8: the store, 6: no healthy member, 4: SSH), which a monitoring
check reads. Credentials come from an EnvironmentFile (0600), never the command line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from orchestrator.core.errors import UsageError

_CALENDAR = re.compile(r"[A-Za-z0-9*:/,.~ +-]{1,100}")
_UNIT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def unit_name(cluster: str) -> str:
    """`etcd-backup-<cluster>`: one pair of units per cluster on one operations machine."""
    name = f"etcd-backup-{cluster}"
    if not _UNIT_NAME.fullmatch(name):
        raise UsageError(f"cluster name {cluster!r} does not make a unit name")
    return name


def systemd_quote(arg: str) -> str:
    """One ExecStart= argument: double-quoted when it needs it, with `\\`, `"`, `%` and `$`
    escaped as systemd reads them (systemd.service, "Command lines")."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    if escaped == arg and arg and not any(c.isspace() or c in "'\";" for c in arg):
        return arg
    return f'"{escaped}"'


def render_offsite_service(
    cluster: str, command: Sequence[str], env_file: str, *, header: str
) -> str:
    """The oneshot service running `command` (etcd-deploy and its arguments)."""
    if not command or not command[0].startswith("/"):
        raise UsageError("the backup command must start with an absolute path")
    if any("\n" in part for part in command):
        raise UsageError("a backup argument holds a newline")
    return (
        "\n".join(
            [
                header,
                "[Unit]",
                f"Description=etcd off-site backup (cluster {cluster})",
                "Documentation=https://etcd.io/docs/",
                "Wants=network-online.target",
                "After=network-online.target",
                "",
                "[Service]",
                "Type=oneshot",
                f"EnvironmentFile=-{env_file}",
                "ExecStart=" + " ".join(systemd_quote(part) for part in command),
                "TimeoutStartSec=2h",
                "Nice=10",
                "IOSchedulingClass=best-effort",
                "IOSchedulingPriority=7",
                "PrivateTmp=yes",
                "NoNewPrivileges=yes",
                "UMask=0077",
            ]
        )
        + "\n"
    )


def render_offsite_timer(cluster: str, on_calendar: str, *, header: str) -> str:
    """The timer starting the service at `on_calendar` (systemd.time calendar events:
    "hourly", "*-*-* 02:30:00", "Mon..Fri 0/4:00"); runs missed while the machine was off
    are caught up at boot (Persistent=)."""
    if not _CALENDAR.fullmatch(on_calendar):
        raise UsageError(
            f"--on-calendar {on_calendar!r}: expected a systemd calendar event such as "
            'hourly, daily or "*-*-* 0/6:00:00"'
        )
    return (
        "\n".join(
            [
                header,
                "[Unit]",
                f"Description=etcd off-site backup {on_calendar} (cluster {cluster})",
                "",
                "[Timer]",
                f"OnCalendar={on_calendar}",
                "RandomizedDelaySec=5min",
                "Persistent=true",
                "",
                "[Install]",
                "WantedBy=timers.target",
            ]
        )
        + "\n"
    )
