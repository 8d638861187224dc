"""The local state dir: what etcd-deploy writes there, and its removal (`destroy
--purge-state`), which takes only those entries: a state dir that is also some other
folder (`state_dir = "."`, next to another cluster's files) loses nothing else."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from orchestrator.adapters.lock import STATE_LOCK_NAME
from orchestrator.adapters.snapshot import parse_snapshot_name

PKI_DIR = "pki"
BACKUPS_DIR = "backups"
CLUSTER_ID_FILE = "cluster-id"
SCHEDULE_FILE = "backup-schedule.json"
OURS = (PKI_DIR, BACKUPS_DIR, CLUSTER_ID_FILE, SCHEDULE_FILE, STATE_LOCK_NAME)


def purge_state_dir(state: Path, cluster: str) -> list[str]:
    """Remove etcd-deploy's entries of `state` (in `backups/`, only this cluster's
    snapshots), then the folder if nothing else is left. Returns what was kept (not ours,
    or not removable), as paths relative to `state`."""
    if not state.is_dir():
        return []
    kept: list[str] = []
    for name in OURS:
        path = state / name
        if name == BACKUPS_DIR and path.is_dir() and not path.is_symlink():
            kept += [f"{BACKUPS_DIR}/{n}" for n in _purge_backups(path, cluster)]
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if path.exists() and name != BACKUPS_DIR:
            kept.append(name)
    kept += sorted(p.name for p in state.iterdir() if p.name not in OURS)
    if not any(state.iterdir()):
        with contextlib.suppress(OSError):
            state.rmdir()
    return kept


def _purge_backups(folder: Path, cluster: str) -> list[str]:
    """Remove `cluster`'s snapshots (and their unfinished `.part` files) from `folder`, then
    the folder when empty; returns the names of what stays."""
    for path in folder.iterdir():
        name = path.name.removesuffix(".part")
        if path.is_file() and parse_snapshot_name(name, cluster) is not None:
            path.unlink()
    left = sorted(p.name for p in folder.iterdir())
    if not left:
        folder.rmdir()
    return left
