"""Bad input through the real CLI: one clear line, the documented exit code, and no SSH.

Every file in tests/bad_input/ is one case (add a file, get a case):

- `NAME.toml`: a broken inventory, run as `etcd-deploy <args> -i NAME.toml` (args: `plan`
  unless the header says otherwise);
- `NAME.args`: a command line, one argument per line after the header.

The header is the file's leading `# key: value` lines:

    # expect-exit: 2                     the exit code
    # expect: substring                  of the single error line
    # args: destroy --yes                (.toml only) the command, split on spaces
    # connections: 0 | some | any        SSH/etcd connections allowed (default 0: a local
                                         problem must be found before connecting)
    # expect-warn: substring             (connecting cases) a WARN line that must appear
    # env: NAME=value                    extra environment for the run
    # xfail: bug: ...                    a known bug (strict xfail)

Placeholders, in case files and headers: {inventory} (a valid 3-host inventory, absolute
path), {tmp} (the case's folder, also the working directory), {ssh_port} / {etcd_port} (TCP
listeners on 127.0.0.1-3 that count connections and close them at once), {closed_port} (a
port nothing listens on), {identity_file}, {known_hosts}, {snapshot} (a real etcd snapshot),
{truncated_snapshot} (the same minus its last byte), {unhashed_snapshot} (without its
trailing sha256), {not_a_snapshot} (4 KiB of text), {bad_known_hosts} (a known_hosts
file with a malformed key), {bad_ssh_config} (an ssh_config paramiko cannot parse),
{match_exec_ssh_config} (an ssh_config with `Match exec`), {proxy_ssh_config} (one with a
ProxyCommand for every host), {bad_home} (a home folder whose .ssh/config paramiko cannot
parse: use it with `env: HOME={bad_home}`), {dangling_link} (a link to nothing).
A case file may start with a UTF-8 byte order mark: it is kept in the inventory written.

Local problems (`connections: 0`): stderr is exactly one non-empty line holding the expected
text (and, for a broken .toml, its file name); stdout is empty; no connection reached the SSH
or etcd listeners; the inventory file is unchanged. Problems found only by connecting: every
stderr line is a log line (no traceback), and the expected text is on exactly one ERROR line.

Cases run as subprocesses in parallel (a session fixture runs the selected ones at once).
Release errors surface only after SSH (`up` reads each host's facts, for its architecture,
before it fetches the release), so they are covered at the Python level at the end.
"""

from __future__ import annotations

import os
import re
import selectors
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.adapters.release import fetch_release, tarball_name
from orchestrator.core.errors import PreflightError
from tests.lab.mirror import serve_mirror, write_release

HERE = Path(__file__).parent
CASES_DIR = HERE.parent / "bad_input"
CASE_FILES = sorted([*CASES_DIR.glob("*.toml"), *CASES_DIR.glob("*.args")])
SNAPSHOT = HERE / "data" / "etcd-3.5.1-snapshot.db"
ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
TIMEOUT = 60
WORKERS = max(2, min(8, 2 * (os.cpu_count() or 1)))

HEADER = re.compile(r"# ([a-z-]+): (.*)")
HEADER_KEYS = {"expect-exit", "expect", "args", "connections", "expect-warn", "env", "xfail"}
LOG_LINE = re.compile(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARN|ERROR|OK) ")

VALID_INVENTORY = """\
[cluster]
name = "demo"
etcd_version = "3.5.30"
release_url = "mirror"
client_port = {etcd_port}

[ssh]
identity_file = "{identity_file}"
known_hosts = "{known_hosts}"
port = {ssh_port}

[[hosts]]
name = "etcd1"
address = "127.0.0.1"

[[hosts]]
name = "etcd2"
address = "127.0.0.2"

[[hosts]]
name = "etcd3"
address = "127.0.0.3"
"""


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    path: Path
    exit_code: int
    expect: str
    argv: tuple[str, ...]
    connections: str = "0"
    expect_warn: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    xfail: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_inventory(self) -> bool:
        return self.path.suffix == ".toml"


def parse_case(path: Path) -> Case:
    lines = path.read_text().removeprefix("\ufeff").splitlines()
    header: dict[str, str] = {}
    body_start = 0
    while body_start < len(lines) and (match := HEADER.fullmatch(lines[body_start])):
        key, value = match.groups()
        assert key in HEADER_KEYS, f"{path.name}: unknown header key {key!r}"
        assert key not in header, f"{path.name}: header key {key!r} given twice"
        header[key] = value.strip()
        body_start += 1
    for key in ("expect-exit", "expect"):
        assert key in header, f"{path.name} must begin with '# {key}: ...'"
    if path.suffix == ".toml":
        argv = tuple(shlex.split(header.get("args", "plan")))
    else:
        assert "args" not in header, f"{path.name}: an .args file holds its arguments itself"
        argv = tuple(line for line in lines[body_start:] if line.strip())
        assert argv, f"{path.name}: no arguments after the header"
    connections = header.get("connections", "0")
    assert connections in ("0", "some", "any"), f"{path.name}: connections: 0, some or any"
    env: list[tuple[str, str]] = []
    for item in shlex.split(header.get("env", "")):
        name, sep, value = item.partition("=")
        assert sep, f"{path.name}: env: NAME=value ..."
        env.append((name, value))
    return Case(
        path=path,
        exit_code=int(header["expect-exit"]),
        expect=header["expect"],
        argv=argv,
        connections=connections,
        expect_warn=header.get("expect-warn"),
        env=tuple(env),
        xfail=header.get("xfail"),
    )


CASES = [parse_case(p) for p in CASE_FILES]


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.name, marks=marks)


# --------------------------------------------------------------------------- listeners


def _bind_same_port(listen: bool) -> tuple[int, list[socket.socket]]:
    """Sockets on every address of ADDRESSES with one port number (listening or not)."""
    for _ in range(50):
        socks: list[socket.socket] = []
        try:
            port = 0
            for address in ADDRESSES:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((address, port))
                port = sock.getsockname()[1]
                if listen:
                    sock.listen(64)
            return port, socks
        except OSError:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port on every address of " + ", ".join(ADDRESSES))


class Listener:
    """One TCP port on 127.0.0.1-3: accepts connections, counts them, closes them at once."""

    def __init__(self) -> None:
        self.port, self._socks = _bind_same_port(listen=True)
        self._count = 0
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        for sock in self._socks:
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _accept_pending(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            self._count += 1
            conn.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                self._accept_pending(key.fileobj)  # type: ignore[arg-type]

    def close(self) -> int:
        """Stop, count what is still queued, close; return the number of connections."""
        self._stop.set()
        self._thread.join()
        for sock in self._socks:
            self._accept_pending(sock)
            sock.close()
        self._selector.close()
        return self._count


class ClosedPort:
    """A port bound (so nobody else takes it) but not listening: connections are refused."""

    def __init__(self) -> None:
        self.port, self._socks = _bind_same_port(listen=False)

    def close(self) -> None:
        for sock in self._socks:
            sock.close()


# --------------------------------------------------------------------------- running


@dataclass
class Outcome:
    argv: list[str]
    code: int
    stdout: str
    stderr: str
    ssh_connections: int
    etcd_connections: int
    values: dict[str, str]
    changed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def describe(self) -> str:
        return (
            f"etcd-deploy {shlex.join(self.argv)}\nexit {self.code}, "
            f"{self.ssh_connections} SSH and {self.etcd_connections} etcd connections\n"
            f"--- stderr:\n{self.stderr}--- stdout:\n{self.stdout}"
        )


def render(text: str, values: dict[str, str]) -> str:
    """Replace the known {placeholders} only (TOML's own braces stay)."""
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


@dataclass(frozen=True)
class SSHFiles:
    identity_file: Path
    known_hosts: Path


def _data_files(folder: Path) -> dict[str, str]:
    """The files a case may name, written into its folder: placeholder -> path."""
    data = SNAPSHOT.read_bytes()
    files = {
        "snapshot.db": data,
        "truncated-snapshot.db": data[:-1],
        "unhashed-snapshot.db": data[:-32],
        "not-a-snapshot.db": b"this is not an etcd snapshot\n" * 142,
        "bad-known_hosts": b"127.0.0.1 ssh-ed25519 !!!notbase64\n",
        "bad-ssh_config": b"Host *\n  Port\n",
        "match-exec-ssh_config": b'Match exec "true"\n  Port 22\n',
        "proxy-ssh_config": b"Host *\n  ProxyCommand false\n",
    }
    out = {}
    for name, content in files.items():
        path = folder / name
        path.write_bytes(content)
        out[name.removesuffix(".db").replace("-", "_")] = str(path)
    bad_home = folder / "bad-home"
    (bad_home / ".ssh").mkdir(parents=True)
    (bad_home / ".ssh" / "config").write_bytes(files["bad-ssh_config"])
    out["bad_home"] = str(bad_home)
    (folder / "dangling-link").symlink_to(folder / "nowhere")
    out["dangling_link"] = str(folder / "dangling-link")
    return out


def run_case(case: Case, folder: Path, ssh_files: SSHFiles) -> Outcome:
    folder.mkdir(parents=True)
    ssh, etcd, closed = Listener(), Listener(), ClosedPort()
    try:
        values = {
            "tmp": str(folder),
            "ssh_port": str(ssh.port),
            "etcd_port": str(etcd.port),
            "closed_port": str(closed.port),
            "identity_file": str(ssh_files.identity_file),
            "known_hosts": str(ssh_files.known_hosts),
            **_data_files(folder),
        }
        inventory = folder / "cluster.toml"  # not ./inventory.toml: that is the default path
        inventory.write_text(render(VALID_INVENTORY, values))
        values["inventory"] = str(inventory)
        watched = [inventory]
        if case.is_inventory:
            target = folder / case.name
            target.write_text(render(case.path.read_text(), values))
            watched.append(target)
            argv = [*case.argv, "-i", str(target)]
        else:
            argv = [render(arg, values) for arg in case.argv]
        before = {path: path.read_bytes() for path in watched}
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("ETCD_DEPLOY_INVENTORY", "SSH_AUTH_SOCK", "NO_COLOR", "FORCE_COLOR")
        }
        env.update(HOME=str(folder / "home"), XDG_CACHE_HOME=str(folder / "cache"), COLUMNS="200")
        env.update({k: render(v, values) for k, v in case.env})
        (folder / "home").mkdir()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "orchestrator", *argv],
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            code, stdout, stderr = -1, str(exc.stdout or ""), f"timed out after {TIMEOUT} s\n"
        changed = [p.name for p in watched if not p.exists() or p.read_bytes() != before[p]]
    finally:
        ssh_count = ssh.close()
        etcd_count = etcd.close()
        closed.close()
    return Outcome(argv, code, stdout, stderr, ssh_count, etcd_count, values, changed)


@pytest.fixture(scope="session")
def ssh_files(tmp_path_factory: pytest.TempPathFactory) -> SSHFiles:
    folder = tmp_path_factory.mktemp("ssh")
    key = folder / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    known_hosts = folder / "known_hosts"
    known_hosts.touch()
    return SSHFiles(key, known_hosts)


@pytest.fixture(scope="session")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ssh_files: SSHFiles
) -> dict[str, Outcome]:
    """Run every selected case at once, in parallel; name -> outcome."""
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_bad_input" and hasattr(item, "callspec")
    ]
    base = tmp_path_factory.mktemp("bad_input")
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {
            case.name: pool.submit(run_case, case, base / case.name, ssh_files) for case in selected
        }
        return {name: future.result() for name, future in futures.items()}


# --------------------------------------------------------------------------- the tests


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 50
    assert {c.path.suffix for c in CASES} == {".toml", ".args"}
    assert len({c.path.stem for c in CASES}) == len(CASES), "one case per name"
    assert shutil.which("ssh-keygen"), "ssh-keygen is needed for the identity file"


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case: Case, outcomes: dict[str, Outcome]) -> None:
    out = outcomes[case.name]
    why = out.describe()
    expect = render(case.expect, out.values)
    assert out.code == case.exit_code, why
    lines = out.lines()
    assert not any("Traceback" in line for line in lines), why
    if case.connections == "0":
        assert len(lines) == 1, "expected exactly one line on stderr\n" + why
        assert expect in lines[0], why
        if case.is_inventory:
            assert case.name in lines[0], "the error must name the inventory file\n" + why
        assert out.stdout.strip() == "", why
        assert out.ssh_connections == 0, "a local problem must be found before any SSH\n" + why
        assert out.etcd_connections == 0, "a local problem must not reach etcd\n" + why
        assert out.changed == [], f"{out.changed} changed by a failed command\n" + why
        return
    # Found only by connecting: log lines only, the reason on exactly one ERROR line.
    strays = [line for line in lines if not LOG_LINE.match(line)]
    assert strays == [], "stderr lines that are not log lines\n" + why
    errors = [line for line in lines if " ERROR " in line[:16]]
    assert len([line for line in errors if expect in line]) == 1, why
    if case.expect_warn:
        warns = [line for line in lines if " WARN " in line[:16]]
        assert any(render(case.expect_warn, out.values) in line for line in warns), why
    if case.connections == "some":
        assert out.ssh_connections > 0, "expected the command to connect\n" + why


# --------------------------------------------------------------------------- releases

FAKE_FILES = {
    "etcd": (b"#!/bin/sh\necho etcd\n", 0o755),
    "etcdctl": (b"#!/bin/sh\necho etcdctl\n", 0o755),
    "etcdutl": (b"#!/bin/sh\necho etcdutl\n", 0o755),
}


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A tiny mirror with 3.5.30 only, served on 127.0.0.1: (url, its folder)."""
    root = tmp_path / "mirror"
    write_release(root, "3.5.30", FAKE_FILES)
    with serve_mirror(root) as url:
        yield url, root


def _fetch_error(url: str, version: str, cache: Path) -> str:
    with pytest.raises(PreflightError) as caught:
        fetch_release(url, version, "amd64", cache_dir=cache, timeout=10)
    assert caught.value.exit_code == 3
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_release_missing_from_the_mirror(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = mirror
    message = _fetch_error(url, "3.5.99", tmp_path / "cache")
    assert f"etcd 3.5.99 for linux-amd64 not found at {url}/v3.5.99/" in message
    assert "(HTTP 404)" in message


def test_release_checksum_mismatch(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, root = mirror
    write_release(root, "3.5.18", FAKE_FILES)
    name = tarball_name("3.5.18", "amd64")
    (root / "v3.5.18" / "SHA256SUMS").write_text(f"{'0' * 64}  {name}\n")
    cache = tmp_path / "cache"
    message = _fetch_error(url, "3.5.18", cache)
    assert f"checksum mismatch for {name} from {url}/v3.5.18/{name}" in message
    assert f"expected {'0' * 64}, got " in message
    left = sorted(p.name for p in (cache / "v3.5.18").iterdir() if p.name.startswith(name))
    assert left == [], f"an unverified tarball stayed in the cache: {left}"


def test_release_sums_without_the_tarball(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, root = mirror
    write_release(root, "3.5.19", FAKE_FILES)
    (root / "v3.5.19" / "SHA256SUMS").write_text(f"{'1' * 64}  etcd-v3.5.19-linux-arm64.tar.gz\n")
    message = _fetch_error(url, "3.5.19", tmp_path / "cache")
    assert f"SHA256SUMS at {url}/v3.5.19/SHA256SUMS has no entry for" in message


def test_release_server_down(tmp_path: Path) -> None:
    closed = ClosedPort()
    try:
        url = f"http://127.0.0.1:{closed.port}/releases"
        message = _fetch_error(url, "3.5.30", tmp_path / "cache")
    finally:
        closed.close()
    assert f"cannot connect to {url}/v3.5.30/SHA256SUMS" in message
