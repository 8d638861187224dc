"""The local state dir: what etcd-deploy writes there, and its removal (`destroy
--purge-state`), which takes only those entries: a state dir that is also some other
folder (`state_dir = "."`, next to another cluster's files) loses nothing else."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from orchestrator.lock import STATE_LOCK_NAME

PKI_DIR = "pki"
BACKUPS_DIR = "backups"
CLUSTER_ID_FILE = "cluster-id"
SCHEDULE_FILE = "backup-schedule.json"
OURS = (PKI_DIR, BACKUPS_DIR, CLUSTER_ID_FILE, SCHEDULE_FILE, STATE_LOCK_NAME)


def purge_state_dir(state: Path) -> list[str]:
    """Remove etcd-deploy's entries of `state`, then the folder if nothing else is left.
    Returns the names of what was kept (not ours)."""
    if not state.is_dir():
        return []
    for name in OURS:
        path = state / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    left = sorted(p.name for p in state.iterdir())
    if not left:
        with contextlib.suppress(OSError):
            state.rmdir()
    return left
