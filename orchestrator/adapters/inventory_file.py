"""The inventory file on the control machine: read and validated (`load_inventory`), and
edited in place keeping its comments (the edits are `core.inventory_edits`; an edit whose
result would not load is refused, and the file is replaced atomically).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.adapters.localfs import write_atomic
from orchestrator.core.errors import InventoryError
from orchestrator.core.inventory import Inventory
from orchestrator.core.inventory_edits import with_cluster_key, with_host_added, with_host_removed
from orchestrator.core.inventory_rules import parse_inventory


def load_inventory(path: Path | str) -> Inventory:
    """Read and validate an inventory; raises InventoryError naming the file and key."""
    path = Path(path)
    return parse_inventory(read_inventory_text(path), path)


def read_inventory_text(path: Path) -> str:
    """The file's text, newlines untouched; InventoryError if it cannot be read."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read()
    except FileNotFoundError:
        raise InventoryError(path, "", "inventory file not found") from None
    except IsADirectoryError:
        raise InventoryError(path, "", "is a folder, not an inventory file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(path, "", f"cannot read the inventory: {exc}") from None


def add_host_to_file(path: Path, name: str, address: str, etcd_address: str | None = None) -> None:
    """Append a [[hosts]] entry, keeping comments and layout; refuse if the result is invalid."""
    path = Path(path)
    text = with_host_added(read_inventory_text(path), path, name, address, etcd_address)
    _write_validated(path, text)


def remove_host_from_file(path: Path, name: str, *, check_only: bool = False) -> None:
    """Delete the [[hosts]] entry `name` and the comment block right above it.

    `check_only`: do everything but the write, so a caller can find out first that the edit
    will work (remove-node checks before it changes the cluster).
    """
    path = Path(path)
    text = with_host_removed(read_inventory_text(path), path, name)
    _write_validated(path, text, check_only=check_only)


def set_cluster_key_in_file(path: Path, key: str, value: Any, *, check_only: bool = False) -> None:
    """Set cluster.<key> (e.g. etcd_version), keeping its comment; refuse invalid results.
    `check_only`: everything but the write (upgrade checks its final edit first)."""
    path = Path(path)
    text = with_cluster_key(read_inventory_text(path), path, key, value)
    _write_validated(path, text, check_only=check_only)


def _write_validated(path: Path, text: str, *, check_only: bool = False) -> None:
    """Validate the edited text exactly as load_inventory would, then write it atomically."""
    parse_inventory(text, path)
    if not check_only:
        atomic_write_text(path, text)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync, os.replace (symlinks followed, the
    file's mode kept)."""
    write_atomic(path, text.encode("utf-8"))
