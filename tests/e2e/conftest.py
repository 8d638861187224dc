"""E2E fixtures: the lab is brought up once per session; every test gets clean hosts.

The bastion topology (`make_bastion_cli`): the CLI runs in the control namespace, which
reaches only the bastion's SSH port, with its own release mirror on the namespace's loopback.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from tests.e2e.load import LoadReport
from tests.lab.control_ns import ControlNamespace
from tests.lab.driver import BASTION, REPO, Lab
from tests.lab.mirror import build_mirror, default_mirror_dir
from tests.lab.s3_server import S3Server


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    lab = Lab()
    lab.up(5)
    yield lab


@pytest.fixture(scope="session")
def release_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session download cache: the first `up` downloads from the HTTP mirror for real."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(scope="session")
def control_ns(lab: Lab) -> ControlNamespace:
    """The control namespace (bastion topology), up for the session; `Lab.down` removes it."""
    namespace = ControlNamespace()
    namespace.up()
    return namespace


@pytest.fixture(scope="session")
def control_mirror(
    control_ns: ControlNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Base URL of a release mirror served inside the control namespace.

    The CLI there sees only the namespace's own loopback, so the session's `release_mirror`
    (a thread of this process, in the root namespace) is out of its reach: the same mirror
    folder is served by a second process started in the namespace.
    """
    root = build_mirror(default_mirror_dir())
    serve = [sys.executable, "-m", "tests.lab.mirror", "serve", "--no-build", "--port", "0"]
    log = tmp_path_factory.mktemp("control-mirror") / "stderr.log"
    with open(log, "wb") as stderr:  # a file: handler tracebacks must never fill a pipe
        proc = subprocess.Popen(
            [*control_ns.prefix(), *serve, str(root)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    try:
        yield _served_url(proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _served_url(proc: subprocess.Popen[str], log: Path, timeout: float = 30) -> str:
    """The URL from the mirror's "serving DIR at URL" line (its first line of output)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    match = re.search(r" at (http://127\.0\.0\.1:\d+)", line)
    if not match:
        raise RuntimeError(f"mirror in the control namespace did not start: {line!r}; see {log}")
    return match.group(1)


@dataclass
class Cli:
    """Runs the real `etcd-deploy` command line against an inventory.

    `prefix` is put before the command, e.g. `ip netns exec etcdlab-ctl` to run it in the
    control namespace (the environment passes through it).
    """

    inventory: Path
    env: dict[str, str]
    prefix: tuple[str, ...] = ()

    def __call__(
        self, *args: str, check: bool = False, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        if "-i" not in args and args and args[0] not in ("--help", "--version"):
            args = _with_inventory(args, self.inventory)
        command = [*self.prefix, sys.executable, "-m", "orchestrator", *args]
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
        cli = [sys.executable, "-m", "orchestrator"]
        command = [*self.prefix, *cli, *_with_inventory(args, self.inventory)]
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


def _with_inventory(args: tuple[str, ...], inventory: Path) -> tuple[str, ...]:
    """`-i INVENTORY` added to the CLI's own options: before a `--` (what follows it is
    another program's, as in `etcdctl -- ARGS`)."""
    at = args.index("--") if "--" in args else len(args)
    return (*args[:at], "-i", str(inventory), *args[at:])


def _cli_maker(
    lab: Lab,
    mirror: str,
    release_cache: Path,
    folder: Path,
    *,
    jump_host: str | None = None,
    prefix: tuple[str, ...] = (),
) -> Callable[..., Cli]:
    """Clean lab hosts, then `make(hosts=3, version=..., extra=..., api=None)` -> a Cli whose
    inventory uses `mirror` and, when given, `jump_host`; `api` is written as
    `etcd_api = "<api>"` in [ssh] (the CLI validates it, not this helper)."""
    lab.clean()
    env = dict(os.environ, XDG_CACHE_HOME=str(release_cache), COLUMNS="200")
    env.pop("ETCD_DEPLOY_INVENTORY", None)

    def make(
        hosts: int = 3, version: str = "3.5.30", extra: str = "", api: str | None = None
    ) -> Cli:
        inventory = lab.inventory(
            folder / "inventory.toml",
            hosts,
            version=version,
            release_url=mirror,
            extra=extra,
            jump_host=jump_host,
            etcd_api=api,
        )
        return Cli(inventory, env, prefix)

    return make


@pytest.fixture
def make_cli(
    lab: Lab, release_mirror: str, release_cache: Path, tmp_path: Path
) -> Callable[..., Cli]:
    """`make_cli(hosts=3, version=..., extra=..., api=None)` -> a Cli on clean lab hosts."""
    return _cli_maker(lab, release_mirror, release_cache, tmp_path)


@pytest.fixture
def make_bastion_cli(
    lab: Lab,
    control_ns: ControlNamespace,
    control_mirror: str,
    release_cache: Path,
    tmp_path: Path,
) -> Callable[..., Cli]:
    """Like `make_cli`, for a Cli that runs in the control namespace and reaches the hosts
    through the bastion only (its release mirror is served inside the namespace)."""
    prefix = tuple(control_ns.prefix())
    return _cli_maker(
        lab, control_mirror, release_cache, tmp_path, jump_host=BASTION.name, prefix=prefix
    )


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
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The lab's S3-compatible store (moto's standalone server), up for the session."""
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
