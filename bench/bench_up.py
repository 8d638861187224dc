"""Time `etcd-deploy up` on the lab and print the figures.

    .venv/bin/python -m bench.bench_up [--runs N]

For 3 and 5 bare hosts (tarball cache warm): `up` with learner joins, `up
--parallel-bootstrap`, then the no-op `up` and `status` on the resulting cluster. Each
figure is the median of N runs with min and max. Wall-clock only: tests never assert it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lab.driver import Lab
from tests.lab.mirror import build_mirror, default_mirror_dir, serve_mirror


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def _figure(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lab = Lab()
    lab.up(5)
    cli = [sys.executable, "-m", "orchestrator"]
    results: dict[str, list[float]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_mirror(build_mirror(default_mirror_dir())) as url,
    ):
        env = dict(os.environ, XDG_CACHE_HOME=str(Path(tmp) / "cache"))
        inventory = Path(tmp) / "inventory.toml"
        lab.inventory(inventory, 1, release_url=url)
        lab.clean()
        _timed([*cli, "up", "-i", str(inventory)], env)  # warm the tarball cache
        for hosts in (3, 5):
            lab.inventory(inventory, hosts, release_url=url)
            for mode, extra in (("learner", []), ("parallel", ["--parallel-bootstrap"])):
                for _ in range(args.runs):
                    lab.clean()
                    results.setdefault(f"up, {hosts} bare hosts, {mode}", []).append(
                        _timed([*cli, "up", "-i", str(inventory), *extra], env)
                    )
                    results.setdefault(f"no-op up, {hosts} hosts", []).append(
                        _timed([*cli, "up", "-i", str(inventory)], env)
                    )
                    results.setdefault(f"status, {hosts} hosts", []).append(
                        _timed([*cli, "status", "-i", str(inventory)], env)
                    )
        lab.clean()
    print(f"etcd-deploy up on the lab, {args.runs} runs each (median, min, max):")
    for name, values in results.items():
        print(f"  {name:34} {_figure(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
