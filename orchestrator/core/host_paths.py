"""Where etcd-deploy puts things on a host (pure): the fixed paths, and the paths under the
inventory's config_dir, install_dir and data_dir. The one place these paths are spelled.

The pki files' paths are `render.pki_paths` (they go with the cert kinds), in `pki_dir`;
the ownership marker's name is `ownership.MARKER_NAME`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.core.etcd_unit import BACKUP_SERVICE, BACKUP_TIMER, UNIT

if TYPE_CHECKING:
    from orchestrator.core.inventory import Inventory

# Fixed paths.
SYSTEMD_DIR = "/etc/systemd/system"
UNIT_PATH = f"{SYSTEMD_DIR}/{UNIT}"
BACKUP_UNIT_PATH = f"{SYSTEMD_DIR}/{BACKUP_SERVICE}"
BACKUP_TIMER_PATH = f"{SYSTEMD_DIR}/{BACKUP_TIMER}"
HOST_BACKUP_DIR = "/var/backups/etcd"  # `backup schedule`'s snapshots
LOCK_PATH = "/run/etcd-deploy.lock"  # the run lock (`host_lock.py`)

# File names in the inventory's folders.
ENV_NAME = "etcd.env"  # config_dir: read by the unit
ETCDCTL_ENV_NAME = "etcdctl.env"  # config_dir: read by the wrapper
PKI_NAME = "pki"  # config_dir: the CA and the host's certs and keys
WRAPPER_NAME = "etcdctl.sh"  # install_dir: etcdctl against the local member
BACKUP_SCRIPT_NAME = "etcd-backup.sh"  # install_dir: run by the backup service


def restore_upload_path(token: str) -> str:
    """Where `restore` receives the snapshot on a host (removed when its script ends)."""
    return f"/var/tmp/etcd-deploy-restore-{token}.db"


def guard_path(lock: str = LOCK_PATH) -> str:
    """The side file whose `flock` guards every change to the run lock `lock`."""
    return f"{lock}.guard"


def is_unit_file(path: str) -> bool:
    """Whether writing `path` needs a `systemctl daemon-reload`."""
    return path.startswith(f"{SYSTEMD_DIR}/")


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"


def config_path(inv: Inventory, name: str) -> str:
    """`name` in the inventory's config_dir."""
    return _join(inv.cluster.config_dir, name)


def env_path(inv: Inventory) -> str:
    return config_path(inv, ENV_NAME)


def etcdctl_env_path(inv: Inventory) -> str:
    return config_path(inv, ETCDCTL_ENV_NAME)


def pki_dir(inv: Inventory) -> str:
    return config_path(inv, PKI_NAME)


def install_path(inv: Inventory, name: str) -> str:
    """`name` in the inventory's install_dir."""
    return _join(inv.cluster.install_dir, name)


def wrapper_path(inv: Inventory) -> str:
    return install_path(inv, WRAPPER_NAME)


def backup_script_path(inv: Inventory) -> str:
    return install_path(inv, BACKUP_SCRIPT_NAME)
