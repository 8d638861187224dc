"""Quantities for people (pure)."""

from __future__ import annotations


def human_size(n: int) -> str:
    """Bytes in B, KiB, MiB, GiB or TiB: "512 B", "1.5 MiB"."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
