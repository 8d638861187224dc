"""The SSH transport against real sshd: every byte a command prints comes back."""

from __future__ import annotations

from pathlib import Path

from orchestrator.inventory import load_inventory
from orchestrator.transport import Pool
from tests.lab.driver import HOSTS, Lab


def test_output_is_complete_even_when_the_exit_status_arrives_first(
    lab: Lab, tmp_path: Path
) -> None:
    """sshd can send a command's exit status before its last output; a reader that stops at
    the status loses the tail. Many short commands with outputs of all sizes, on every host."""
    inventory = lab.inventory(tmp_path / "inventory.toml", len(HOSTS), version="3.5.1")
    pool = Pool(load_inventory(inventory), log=lambda _n, _m: None)
    sizes = [1, 100, 4095, 32_768, 70_000, 300_000, 1_000_000]

    def one(conn) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
        wrong = []
        for _round in range(15):
            for size in sizes:
                out = conn.run(f"head -c {size} /dev/zero | tr '\\0' x; echo END", quiet=True)
                if out.stdout != "x" * size + "END\n":
                    wrong.append((size, len(out.stdout)))
        return wrong

    try:
        results = pool.map(one, list(HOSTS))
    finally:
        pool.close()
    assert {n: r.value for n, r in results.items()} == {n: [] for n in HOSTS}
