"""Measure etcd-deploy on the lab against etcd's own floor, in one run, and print the figures.

    .venv/bin/python -m bench.run [--runs 3] [--no-backup]

Every figure is the median of --runs runs (min and max beside it), with its ratio to the
matching floor measured on the same hosts in the same run: `up` on 1, 3 and 5 bare hosts in
both bootstrap modes (tarball cache warm), the no-op `up` on 3 and 5 hosts, `status`,
`add-node`, a rolling restart of 3 members, `backup` of a ~100 MB cluster, the two floors
(bench/floors.py) and one parallel `ssh HOST true` to every host; then `status`, no-op `up`
and `backup` with etcd's API through SSH against straight to the port (`--api-paths-only`:
just those); `--offsite-only`: backups to the lab's S3 store, age-encrypted and not, against
`backup -o`, and restore from the store against restore from a file. Also: SSH commands and
bytes sent per host, and the CLI's peak memory. Writes docs/bench.md and docs/bench.png.
Wall-clock only: the tests never assert on time.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.floors import learner_floor, static_floor
from orchestrator.adapters.inventory_file import load_inventory
from orchestrator.engine.context import RunContext
from orchestrator.ui import UI
from tests.lab.driver import Lab
from tests.lab.mirror import build_mirror, default_mirror_dir, serve_mirror

DOCS = Path(__file__).resolve().parents[1] / "docs"
# Runs each CLI invocation in a child and reports its peak RSS (KiB) on the last line.
MEASURE = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)


@dataclass
class Figure:
    name: str
    hosts: int
    values: list[float] = field(default_factory=list)
    floor: str = ""  # the name of the figure this one is compared with
    commands: float = 0.0  # SSH commands per host (last run)
    bytes_sent: float = 0.0  # bytes sent per host (last run)
    peak_mib: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.values)


class Bench:
    def __init__(self, lab: Lab, mirror: str, tmp: Path, runs: int) -> None:
        self.lab = lab
        self.mirror = mirror
        self.tmp = tmp
        self.runs = runs
        self.env = dict(os.environ, XDG_CACHE_HOME=str(tmp / "cache"), COLUMNS="200")
        self.figures: dict[str, Figure] = {}
        self.inventory = tmp / "inventory.toml"

    def write_inventory(self, hosts: int, etcd_api: str = "auto") -> None:
        self.lab.inventory(self.inventory, hosts, release_url=self.mirror, etcd_api=etcd_api)

    def cli(self, name: str, hosts: int, *args: str, floor: str = "") -> float:
        """Time one CLI run (recorded under `name`)."""
        stats = self.tmp / "stats.json"
        command = [
            sys.executable,
            "-c",
            MEASURE,
            sys.executable,
            "-m",
            "orchestrator",
            *args,
            "-i",
            str(self.inventory),
        ]
        env = dict(self.env, ETCD_DEPLOY_STATS=str(stats))
        started = time.perf_counter()
        proc = subprocess.run(
            command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
        )
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"{name}: {' '.join(args)} failed:\n{proc.stderr}")
        figure = self.figures.setdefault(name, Figure(name, hosts, floor=floor))
        figure.values.append(elapsed)
        figure.peak_mib = max(figure.peak_mib, int(proc.stdout.split()[-1]) / 1024)
        per_host = list(json.loads(stats.read_text()).values()) if stats.exists() else []
        if per_host:  # (status uses no SSH at all)
            figure.commands = statistics.mean(h["commands"] for h in per_host)
            figure.bytes_sent = statistics.mean(h["bytes_sent"] for h in per_host)
        stats.unlink(missing_ok=True)
        return elapsed

    def record(self, name: str, hosts: int, value: float) -> None:
        self.figures.setdefault(name, Figure(name, hosts)).values.append(value)

    def context(self) -> RunContext:
        return RunContext(load_inventory(self.inventory), UI())

    def ssh_round(self, hosts: int) -> float:
        names = [h.name for h in self.lab.hosts(hosts)]
        started = time.perf_counter()
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda n: self.lab.ssh(n, "true"), names))
        return time.perf_counter() - started

    def run(self, with_backup: bool) -> None:
        self.lab.clean()
        self.write_inventory(1)
        self.cli("warm-up", 1, "up")  # the tarball cache is warm from here on
        for hosts in (1, 3, 5):
            self.write_inventory(hosts)
            for _ in range(self.runs):
                self.record(f"ssh true, parallel, {hosts} hosts", hosts, self.ssh_round(hosts))
                self.lab.clean()
                self.cli(
                    f"up, learner, {hosts} hosts",
                    hosts,
                    "up",
                    floor=f"learner floor, {hosts} hosts",
                )
                ctx = self.context()
                try:
                    self.record(f"learner floor, {hosts} hosts", hosts, learner_floor(ctx))
                    self.record(f"static floor, {hosts} hosts", hosts, static_floor(ctx))
                finally:
                    ctx.close()
                self.lab.clean()
                self.cli(
                    f"up, parallel, {hosts} hosts",
                    hosts,
                    "up",
                    "--parallel-bootstrap",
                    floor=f"static floor, {hosts} hosts",
                )
                if hosts > 1:
                    ssh = f"ssh true, parallel, {hosts} hosts"
                    self.cli(f"no-op up, {hosts} hosts", hosts, "up", floor=ssh)
                    self.cli(f"status, {hosts} hosts", hosts, "status", floor=ssh)
        self.write_inventory(3)
        for _ in range(self.runs):
            self.lab.clean()
            self.cli("up (for add-node)", 3, "up")
            self.cli(
                "add-node, 3 -> 4",
                4,
                "add-node",
                "etcd4",
                "--address",
                "172.29.50.14",
                floor="learner floor, 3 hosts",
            )
            self.write_inventory(3)
            self.cli("rolling restart, 3 members", 3, "restart")
        if with_backup:
            self.fill(100)
            for _ in range(self.runs):
                self.cli("backup, ~100 MB", 3, "backup", "-o", str(self.tmp / "backups"))
        self.lab.clean()

    def run_api_paths(self) -> None:
        """etcd's API through SSH (`ssh.etcd_api = "ssh"`) against straight to the port, on
        the same 3-member cluster, alternating so that drift hits both alike."""
        self.write_inventory(3)
        self.lab.clean()
        self.cli("up (for API paths)", 3, "up")
        for label, args in (("status", ("status",)), ("no-op up", ("up",))):
            for _ in range(self.runs):
                for path in ("direct", "ssh"):
                    self.write_inventory(3, path)
                    floor = "" if path == "direct" else f"{label}, API direct, 3 hosts"
                    self.cli(f"{label}, API {path}, 3 hosts", 3, *args, floor=floor)
        self.fill(100)
        for _ in range(self.runs):
            for path in ("direct", "ssh"):
                self.write_inventory(3, path)
                floor = "" if path == "direct" else "backup ~100 MB, API direct"
                out = self.tmp / f"backups-{path}"
                self.cli(f"backup ~100 MB, API {path}", 3, "backup", "-o", str(out), floor=floor)
        self.lab.clean()

    def run_offsite(self) -> None:
        """Off-site backups of a ~100 MB cluster to the lab's S3 store (moto's server),
        age-encrypted and not, against `backup -o` to a local folder; restore from the
        store against restore from a local file. Alternating, on the same 3 members."""
        from pyrage import x25519

        from tests.lab.s3_server import S3Server

        server = S3Server(self.tmp / "moto.log")
        server.start()
        try:
            self.env.update(server.env())
            server.client().create_bucket(
                Bucket="bench", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
            )
            identity = x25519.Identity.generate()
            key = self.tmp / "age.txt"
            key.write_text(f"{identity}\n")
            recipient = str(identity.to_public())
            self.write_inventory(3)
            self.lab.clean()
            self.cli("up (for off-site)", 3, "up")
            self.fill(100)
            local = "backup ~100 MB, -o local folder"
            for _ in range(self.runs):
                out = self.tmp / "local-backups"
                self.cli(local, 3, "backup", "-o", str(out))
                self.cli(
                    "backup ~100 MB, --to S3", 3, "backup", "--to", "s3://bench/plain/", floor=local
                )
                self.cli(
                    "backup ~100 MB, --to S3, age",
                    3,
                    "backup",
                    "--to",
                    "s3://bench/age/",
                    "--encrypt-to",
                    recipient,
                    floor=local,
                )
            newest = max((self.tmp / "local-backups").iterdir())
            restore_local = "restore ~100 MB, local file"
            for _ in range(self.runs):
                self.cli(restore_local, 3, "restore", str(newest), "--yes")
                self.cli(
                    "restore ~100 MB, S3 + age",
                    3,
                    "restore",
                    "s3://bench/age/",
                    "--identity",
                    str(key),
                    "--yes",
                    floor=restore_local,
                )
        finally:
            server.stop()
            self.lab.clean()

    def fill(self, mib: int) -> None:
        """About `mib` MiB of keys in the cluster (values of 64 KiB)."""
        ctx = self.context()
        try:
            client = ctx.client()
            value = base64.b64encode(os.urandom(48 * 1024)).decode()
            endpoint = ctx.inv.client_url(ctx.inv.hosts[0])
            for i in range(mib * 16):
                key = base64.b64encode(f"/bench/{i:06d}".encode()).decode()
                client._post(endpoint, "/v3/kv/put", {"key": key, "value": value})
        finally:
            ctx.close()


def report(figures: dict[str, Figure]) -> str:
    lines = [
        "| measurement | hosts | median s | min | max | vs floor | SSH cmds/host | KiB sent/host "
        "| peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figures.values():
        if f.name.startswith(("warm-up", "up (for ")):
            continue
        ratio = ""
        if f.floor and f.floor in figures:
            ratio = f"{f.median / figures[f.floor].median:.2f}x {f.floor}"
        lines.append(
            f"| {f.name} | {f.hosts} | {f.median:.2f} | {min(f.values):.2f} | {max(f.values):.2f} "
            f"| {ratio} | {f.commands:.1f} | {f.bytes_sent / 1024:.0f} | {f.peak_mib:.0f} |"
        )
    return "\n".join(lines)


def plot(figures: dict[str, Figure], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for series, style in (
        ("up, learner", "o-"),
        ("up, parallel", "s-"),
        ("learner floor", "o--"),
        ("static floor", "s--"),
    ):
        points = sorted(
            (f.hosts, f.median) for f in figures.values() if f.name.startswith(series + ",")
        )
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=series)
    ax.set_xlabel("hosts")
    ax.set_ylabel("seconds (median)")
    ax.set_xticks([1, 3, 5])
    ax.set_title("etcd-deploy up vs etcd's own floor (lab)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-backup", action="store_true")
    parser.add_argument(
        "--api-paths-only",
        action="store_true",
        help="only etcd's API through SSH against direct (status, no-op up, backup)",
    )
    parser.add_argument(
        "--offsite-only",
        action="store_true",
        help="only off-site backups (S3, age) against local ones, and restores from them",
    )
    args = parser.parse_args()
    lab = Lab()
    lab.up(5)
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_mirror(build_mirror(default_mirror_dir())) as url,
    ):
        bench = Bench(lab, url, Path(tmp), args.runs)
        if args.offsite_only:
            bench.run_offsite()
        else:
            if not args.api_paths_only:
                bench.run(with_backup=not args.no_backup)
            bench.run_api_paths()
    table = report(bench.figures)
    print(table)
    if args.offsite_only:
        (DOCS / "bench-offsite.md").write_text(
            "# Off-site backups against local ones (python -m bench.run --offsite-only)\n\n"
            + table
            + "\n"
        )
        return 0
    if args.api_paths_only:
        (DOCS / "bench-api-paths.md").write_text(
            "# etcd's API through SSH against direct (python -m bench.run --api-paths-only)\n\n"
            + table
            + "\n"
        )
        return 0
    DOCS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (DOCS / "bench.md").write_text(
        f"# etcd-deploy on the lab ({stamp}, {args.runs} runs each)\n\n"
        "Produced by `python -m bench.run`. Floors: bench/floors.py.\n\n" + table + "\n"
    )
    if plot(bench.figures, DOCS / "bench.png"):
        print(f"wrote {DOCS / 'bench.md'} and {DOCS / 'bench.png'}")
    else:
        print(f"wrote {DOCS / 'bench.md'} (install matplotlib for the plot)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
