"""E2E fixtures: the lab is brought up once per session; every test gets clean hosts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from tests.e2e.load import LoadReport
from tests.lab.driver import Lab


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    lab = Lab()
    lab.up(5)
    yield lab


@pytest.fixture(scope="session")
def release_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session download cache: the first `up` downloads from the HTTP mirror for real."""
    return tmp_path_factory.mktemp("xdg-cache")


@dataclass
class Cli:
    """Runs the real `etcd-deploy` command line against an inventory."""

    inventory: Path
    env: dict[str, str]

    def __call__(
        self, *args: str, check: bool = False, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "orchestrator", *args]
        if "-i" not in args and args and args[0] not in ("--help", "--version"):
            command += ["-i", str(self.inventory)]
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def run_reacting(
        self, *args: str, react: Callable[[str, subprocess.Popen[str]], None]
    ) -> tuple[int, str]:
        """Run the CLI, calling `react(line, process)` on each stderr line as it comes (to
        kill it or inject a fault at a given moment). Returns the exit code and stderr."""
        command = [sys.executable, "-m", "orchestrator", *args, "-i", str(self.inventory)]
        proc = subprocess.Popen(
            command, stderr=subprocess.PIPE, text=True, env=self.env, stdin=subprocess.DEVNULL
        )
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            react(line, proc)
        return proc.wait(), "".join(lines)

    def killed_at(self, marker: str, *args: str) -> int:
        """Run the CLI and SIGKILL it right after it logs `marker`."""

        def kill(line: str, proc: subprocess.Popen[str]) -> None:
            if marker in line:
                proc.send_signal(signal.SIGKILL)

        return self.run_reacting(*args, react=kill)[0]

    def status(self) -> dict:
        proc = self("status", "--json")
        assert proc.stdout, proc.stderr
        return json.loads(proc.stdout)


@pytest.fixture
def make_cli(
    lab: Lab, release_mirror: str, release_cache: Path, tmp_path: Path
) -> Iterator[Callable[..., Cli]]:
    """`make_cli(hosts=3, version=..., extra=...)` -> a Cli on clean lab hosts."""
    lab.clean()
    env = dict(os.environ, XDG_CACHE_HOME=str(release_cache), COLUMNS="200")
    env.pop("ETCD_DEPLOY_INVENTORY", None)

    def make(hosts: int = 3, version: str = "3.5.1", extra: str = "") -> Cli:
        inventory = lab.inventory(
            tmp_path / "inventory.toml",
            hosts,
            version=version,
            release_url=release_mirror,
            extra=extra,
        )
        return Cli(inventory, env)

    yield make


def unit_started_at(lab: Lab, host: str) -> str:
    return lab.exec(
        host, "systemctl show -p ActiveEnterTimestamp --value etcd.service"
    ).stdout.strip()


class LoadTable:
    """Per operation: writes acknowledged, writes lost, longest stall. Printed at the end."""

    rows: ClassVar[list[tuple[str, int, int, float]]] = []

    def add(self, operation: str, report: LoadReport) -> None:
        self.rows.append((operation, report.acknowledged, len(report.lost), report.longest_stall))


@pytest.fixture(scope="session")
def load_table() -> LoadTable:
    return LoadTable()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not LoadTable.rows:
        return
    terminalreporter.section("writes under load (a writer ran through each operation)")
    terminalreporter.write_line(
        f"{'operation':34} {'acknowledged':>12} {'lost':>5} {'longest stall':>14}"
    )
    for operation, acked, lost, stall in LoadTable.rows:
        terminalreporter.write_line(f"{operation:34} {acked:>12} {lost:>5} {stall:>12.2f} s")
