"""`backup schedule`: a systemd timer on every host that snapshots its member (pure).

Decisions: --every is a time span systemd takes (a usage error otherwise, before any host
is touched); what each host gets (the backup script, its service and timer, rendered for
that host) or, with --off, loses (the timer, service and script; the snapshots taken stay).
Steps, in the order they run: [schedule HOST] on every host at once, then [record] the
schedule in the local state dir (`status` shows it; --off removes the record).
"""

from __future__ import annotations

import json

from orchestrator.core.host_paths import (
    BACKUP_TIMER_PATH,
    BACKUP_UNIT_PATH,
    HOST_BACKUP_DIR,
    backup_script_path,
)
from orchestrator.core.host_plan import DesiredFile
from orchestrator.core.inventory import Host, Inventory
from orchestrator.core.plan import Plan, Step
from orchestrator.core.render import (
    render_backup_script,
    render_backup_service,
    render_backup_timer,
)


def schedule_files(inv: Inventory, host: Host, every: str, keep: int) -> list[DesiredFile]:
    """The script, service and timer of `host`'s scheduled backups (raises UsageError for an
    --every systemd does not take)."""
    script = backup_script_path(inv)
    return [
        DesiredFile(
            script,
            render_backup_script(inv, host, keep=keep, folder=HOST_BACKUP_DIR).encode(),
            0o700,
            "root",
            "root",
            "backup",
        ),
        DesiredFile(
            BACKUP_UNIT_PATH,
            render_backup_service(inv, script, HOST_BACKUP_DIR).encode(),
            0o644,
            "root",
            "root",
            "backup",
        ),
        DesiredFile(
            BACKUP_TIMER_PATH,
            render_backup_timer(inv, every).encode(),
            0o644,
            "root",
            "root",
            "backup",
        ),
    ]


def schedule_record(every: str, keep: int) -> bytes:
    """What the state dir records about the schedule."""
    return json.dumps({"every": every, "keep": keep, "folder": HOST_BACKUP_DIR}).encode()


def plan_schedule(
    inv: Inventory, *, every: str, keep: int, off: bool, record: str = "the state dir"
) -> Plan:
    """Install (or with `off` remove) the backup timer on every inventory host. `record`:
    the local file that records the schedule (for the plan's text)."""
    if off:
        steps = [
            Step(
                "schedule",
                host.name,
                f"remove the backup timer, its service and {backup_script_path(inv)}",
                f"--off; the snapshots in {HOST_BACKUP_DIR} stay",
                parallel=True,
            )
            for host in inv.hosts
        ]
        steps.append(Step("record", None, f"remove {record}", "--off", args={"off": True}))
        return Plan("backup schedule", steps=tuple(steps))
    steps = []
    for host in inv.hosts:
        files = schedule_files(inv, host, every, keep)
        steps.append(
            Step(
                "schedule",
                host.name,
                f"install the backup timer: a snapshot every {every} into {HOST_BACKUP_DIR}, "
                f"keeping the last {keep}",
                "written whole, the timer (re)started",
                parallel=True,
                detail=tuple(f"~ {f.path} ({f.mode:04o})" for f in files),
                args={"files": files},
            )
        )
    steps.append(
        Step(
            "record",
            None,
            f"record the schedule in {record}",
            f"every {every}, keep {keep}",
            args={"off": False, "data": schedule_record(every, keep)},
        )
    )
    return Plan("backup schedule", steps=tuple(steps))
