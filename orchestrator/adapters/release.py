"""Official etcd release tarballs on the control machine: download once, verify, cache.

Layout of a release source (the official one, or a mirror of it)::

    {release_url}/v{version}/etcd-v{version}-linux-{arch}.tar.gz
    {release_url}/v{version}/SHA256SUMS

`release_url` is an http(s):// URL, a file:// URL or a plain local folder (air-gapped).

Cache layout (`default_cache_dir()` unless given)::

    {cache}/v{version}/etcd-v{version}-linux-{arch}.tar.gz   verified tarball
    {cache}/v{version}/SHA256SUMS                            verbatim copy from the source
    {cache}/v{version}/SHA256SUMS.source                     which source it came from (JSON)

A warm cache (tarball and SHA256SUMS from the same source agree) needs no network at all.
Downloads go to a per-call unique `NAME.<pid>-<token>.part`, are hashed while streaming,
checked against SHA256SUMS and for a sane layout, fsynced and only then renamed into place,
so concurrent fetches of the same version never leave a partial or unverified tarball.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import secrets
import tarfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import httpx

from orchestrator.adapters.localfs import fsync_dir, write_atomic
from orchestrator.core.errors import PreflightError
from orchestrator.core.rules import (
    Version,
    needs_release_pin,
    redact_url,
    release_pin_key,
    version_problem,
)

ARCH_BY_UNAME = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}

SUMS_NAME = "SHA256SUMS"
_MARKER_NAME = "SHA256SUMS.source"
_CHUNK = 1024 * 1024
_MAX_SUMS_BYTES = 1024 * 1024
_STALE_PART_SECONDS = 3600
_HEX64_RE = re.compile(r"^[0-9a-fA-F]{64}$")
REQUIRED_BINARIES = ("etcd", "etcdctl")
OPTIONAL_BINARIES = ("etcdutl",)

Progress = Callable[[int, int | None], None]
Log = Callable[[str], None]


def arch_for(uname_m: str) -> str:
    """Map `uname -m` output to the etcd release architecture; PreflightError if unknown."""
    key = uname_m.strip()
    try:
        return ARCH_BY_UNAME[key]
    except KeyError:
        known = ", ".join(sorted(ARCH_BY_UNAME))
        raise PreflightError(
            f"unsupported machine architecture {key!r}: etcd releases exist for {known}"
        ) from None


def tarball_name(version: str, arch: str) -> str:
    """Official tarball file name, e.g. `etcd-v3.5.1-linux-amd64.tar.gz`."""
    return f"etcd-v{version}-linux-{arch}.tar.gz"


def top_dir_name(version: str, arch: str) -> str:
    """Top folder inside the tarball, e.g. `etcd-v3.5.1-linux-amd64`."""
    return f"etcd-v{version}-linux-{arch}"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/etcd-deploy/releases`, or `~/.cache/etcd-deploy/releases`."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "etcd-deploy" / "releases"


@dataclass(frozen=True)
class Release:
    """A verified release tarball in the local cache."""

    version: str
    arch: str
    path: Path
    sha256: str
    size: int
    top_dir: str
    binaries: tuple[str, ...] = REQUIRED_BINARIES  # etcd, etcdctl and etcdutl when present


@functools.cache
def release_bytes(release: Release) -> bytes:
    """The tarball's bytes, read once per run however many hosts it goes to."""
    return release.path.read_bytes()


# --------------------------------------------------------------------------------------------
# Sources: HTTP(S) or local folder


class _NotFound(Exception):
    """The source has no such file (HTTP 404 or missing local file)."""

    def __init__(self, where: str, status: int | None) -> None:
        super().__init__(where)
        self.where = where
        self.status = status

    def suffix(self) -> str:
        return f" (HTTP {self.status})" if self.status is not None else ""


class _Source:
    """Where release files come from; raises _NotFound or PreflightError."""

    def __init__(self, release_url: str, timeout: float) -> None:
        self.timeout = timeout
        self._client: httpx.Client | None = None
        url = release_url.strip()
        parsed = urllib.parse.urlsplit(url)
        scheme = parsed.scheme.lower()
        self.shown = redact_url(url.rstrip("/"))  # for messages and the cache marker
        if scheme in ("http", "https"):
            self.base = url.rstrip("/")
            self.local: Path | None = None
        elif scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise PreflightError(
                    f"unsupported file URL {self.shown!r}: use file:///absolute/path"
                )
            self.local = Path(urllib.request.url2pathname(parsed.path))
            self.base = str(self.local).rstrip("/") or "/"
        elif scheme and len(scheme) > 1:  # one letter: a Windows drive, treat as a path
            raise PreflightError(
                f"unsupported release_url {self.shown!r}: use http(s)://, file:// or a local folder"
            )
        else:
            self.local = Path(url).expanduser().absolute()
            self.base = str(self.local)

    @property
    def key(self) -> str:
        """Identifies the source in the cache marker (a password in the URL redacted)."""
        return redact_url(self.base)

    def where(self, rel: str) -> str:
        """URL or path of `rel` under the source, for messages: credentials redacted."""
        if self.local is not None:
            return str(self.local / rel)
        return redact_url(f"{self.base}/{rel}")

    def _url(self, rel: str) -> str:
        """The URL to request (credentials kept: httpx sends them as basic auth)."""
        return f"{self.base}/{rel}"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=True,
                headers={
                    "Accept-Encoding": "identity",
                    "User-Agent": "etcd-deploy (release fetch)",
                },
            )
        return self._client

    @contextlib.contextmanager
    def _errors(self, url: str) -> Iterator[None]:
        """Turn transport errors into one-line PreflightErrors naming the URL."""
        try:
            yield
        except httpx.TimeoutException:
            raise PreflightError(f"timed out after {self.timeout:g}s fetching {url}") from None
        except httpx.ConnectError as exc:
            raise PreflightError(f"cannot connect to {url}: {self._text(exc)}") from None
        except httpx.TooManyRedirects:
            raise PreflightError(f"too many redirects fetching {url}") from None
        except httpx.HTTPError as exc:
            raise PreflightError(f"error fetching {url}: {self._text(exc)}") from None

    def _text(self, exc: Exception) -> str:
        """An exception's message, any copy of the source URL in it redacted."""
        text = str(exc) or type(exc).__name__
        return text.replace(self.base, self.shown) if self.base != self.shown else text

    @staticmethod
    def _check_status(url: str, response: httpx.Response) -> None:
        if response.status_code == 404:
            raise _NotFound(url, 404)
        if response.status_code >= 400:
            raise PreflightError(f"HTTP {response.status_code} fetching {url}")

    def read_small(self, rel: str, limit: int = _MAX_SUMS_BYTES) -> bytes:
        """Whole content of a small file (SHA256SUMS)."""
        where = self.where(rel)
        if self.local is not None:
            try:
                with open(self.local / rel, "rb") as f:
                    data = f.read(limit + 1)
            except (FileNotFoundError, NotADirectoryError):
                raise _NotFound(where, None) from None
            except OSError as exc:
                raise PreflightError(f"cannot read {where}: {exc.strerror or exc}") from None
        else:
            with self._errors(where), self._http().stream("GET", self._url(rel)) as response:
                self._check_status(where, response)
                buf = bytearray()
                for chunk in response.iter_bytes():
                    buf += chunk
                    if len(buf) > limit:
                        break
                data = bytes(buf)
        if len(data) > limit:
            raise PreflightError(f"{where} is larger than {limit} bytes: not a SHA256SUMS file")
        return data

    def exists(self, rel: str) -> bool | None:
        """True/False when known, None when the server does not say (HEAD unsupported...)."""
        if self.local is not None:
            return (self.local / rel).is_file()
        try:
            response = self._http().head(self._url(rel))
        except httpx.HTTPError:
            return None
        if response.status_code == 404:
            return False
        return True if response.status_code < 400 else None

    def copy_to(self, rel: str, out: BinaryIO, progress: Progress | None) -> str:
        """Stream `rel` into `out`; return its sha256 hex digest."""
        where = self.where(rel)
        if self.local is not None:
            try:
                src = open(self.local / rel, "rb")  # noqa: SIM115 - closed below
            except (FileNotFoundError, NotADirectoryError):
                raise _NotFound(where, None) from None
            except OSError as exc:
                raise PreflightError(f"cannot read {where}: {exc.strerror or exc}") from None
            with src:
                size = os.fstat(src.fileno()).st_size
                return _copy(iter(lambda: src.read(_CHUNK), b""), out, size, progress)
        with self._errors(where), self._http().stream("GET", self._url(rel)) as response:
            self._check_status(where, response)
            length = response.headers.get("Content-Length", "")
            # Raw bytes: a .tar.gz must never be transparently gunzipped.
            return _copy(
                response.iter_raw(_CHUNK), out, int(length) if length.isdigit() else None, progress
            )


def _copy(
    chunks: Iterable[bytes], out: BinaryIO, total: int | None, progress: Progress | None
) -> str:
    """Write `chunks` to `out`, reporting progress; return their sha256 hex digest."""
    digest = hashlib.sha256()
    done = 0
    if progress:
        progress(0, total)
    for chunk in chunks:
        digest.update(chunk)
        out.write(chunk)
        done += len(chunk)
        if progress:
            progress(done, total)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Helpers


def parse_sha256sums(text: str) -> dict[str, str]:
    """Parse `<hex>  <name>` (or `<hex> *<name>`) lines into {name: lowercase hex}."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2 or not _HEX64_RE.match(parts[0]):
            continue
        name = parts[1].strip().lstrip("*")
        name = name.removeprefix("./")
        sums[name] = parts[0].lower()
    return sums


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_if_file(path: Path) -> tuple[str, int] | None:
    """(sha256, size) of a file, or None when it does not exist (maybe removed meanwhile)."""
    try:
        return sha256_file(path), path.stat().st_size
    except (FileNotFoundError, IsADirectoryError):
        return None


def verify_layout(path: Path, top_dir: str) -> tuple[str, ...]:
    """Check the tarball's members; return the binaries found. Raises ValueError."""
    required = {f"{top_dir}/{b}" for b in REQUIRED_BINARIES}
    optional = {f"{top_dir}/{b}" for b in OPTIONAL_BINARIES}
    found: set[str] = set()
    try:
        with tarfile.open(path, "r:gz") as tf:
            for member in tf:
                raw = member.name
                if raw.startswith("/") or "\\" in raw:
                    raise ValueError(f"member {raw!r} has an absolute or odd path")
                parts = PurePosixPath(raw).parts
                if ".." in parts:
                    raise ValueError(f"member {raw!r} contains '..'")
                clean = "/".join(p for p in parts if p != ".")
                if clean != top_dir and not clean.startswith(top_dir + "/"):
                    raise ValueError(f"member {raw!r} is outside the top folder {top_dir}/")
                if member.islnk() or member.issym():
                    target = member.linkname
                    if target.startswith("/") or ".." in PurePosixPath(target).parts:
                        raise ValueError(f"link {raw!r} points outside the tarball ({target})")
                elif not (member.isfile() or member.isdir()):
                    raise ValueError(f"member {raw!r} is not a regular file or folder")
                if clean in required or clean in optional:
                    if not member.isfile():
                        raise ValueError(f"{clean} is not a regular file")
                    found.add(clean)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"not a valid gzip tarball ({exc})") from None
    missing = sorted(required - found)
    if missing:
        raise ValueError("missing " + ", ".join(missing))
    names = REQUIRED_BINARIES + OPTIONAL_BINARIES
    return tuple(b for b in names if f"{top_dir}/{b}" in found)


def _part_path(final: Path) -> Path:
    return final.with_name(f"{final.name}.{os.getpid()}-{secrets.token_hex(4)}.part")


def _sweep_stale_parts(folder: Path) -> None:
    """Remove `.part` files left by killed processes (older than an hour)."""
    cutoff = time.time() - _STALE_PART_SECONDS
    for part in folder.glob("*.part"):
        with contextlib.suppress(OSError):
            if part.stat().st_mtime < cutoff:
                part.unlink()


def _cached_sums(vdir: Path, source_key: str) -> dict[str, str] | None:
    """Cached SHA256SUMS if it came intact from this source, else None."""
    try:
        data = (vdir / SUMS_NAME).read_bytes()
        marker = json.loads((vdir / _MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("source") != source_key:
        return None
    if marker.get("sha256") != hashlib.sha256(data).hexdigest():
        return None
    return parse_sha256sums(data.decode("utf-8", "replace"))


def _store_sums(vdir: Path, source_key: str, data: bytes) -> None:
    write_atomic(vdir / SUMS_NAME, data, 0o644)
    marker = {"source": source_key, "sha256": hashlib.sha256(data).hexdigest()}
    write_atomic(vdir / _MARKER_NAME, (json.dumps(marker) + "\n").encode(), 0o644)


# --------------------------------------------------------------------------------------------
# Public entry point


def fetch_release(
    release_url: str,
    version: Version | str,
    arch: str,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    timeout: float = 30.0,
    log: Log | None = None,
    sha256: str | None = None,
) -> Release:
    """Return the verified release tarball for `version`/`arch`, downloading it if needed.

    `progress(done_bytes, total_bytes_or_None)` is called while downloading; `log` receives
    one-line notes (e.g. a corrupt cached tarball being fetched again). All failures raise
    PreflightError with a one-line message naming the URL (a password in it redacted).
    `sha256`: the tarball's hash pinned in the inventory (`cluster.release_sha256`); it
    replaces SHA256SUMS, which is then not fetched (it may come from the same plain-http
    server as the tarball). A `Version` was checked when it was parsed (the inventory's, or
    `upgrade`'s target); a string is checked here (`rules.version_problem`).
    """
    if not isinstance(version, Version):
        problem = version_problem(version)
        if problem is not None:
            raise PreflightError(f"etcd release: {problem}")
    version = str(version)
    if arch not in set(ARCH_BY_UNAME.values()):
        raise PreflightError(f"unsupported etcd architecture {arch!r}")
    cache = (cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    vdir = cache / f"v{version}"
    source = _Source(release_url, timeout)
    if sha256 is None and needs_release_pin(release_url):
        raise PreflightError(
            f"release_url {source.shown} is plain http:// on another machine: pin the "
            f'tarball\'s sha256 in cluster.release_sha256 ("{release_pin_key(version, arch)}" '
            '= "<sha256>") or use https://'
        )
    want = _Wanted(version, arch, source, vdir)
    note = log or (lambda _msg: None)

    try:
        vdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PreflightError(f"cannot create release cache {vdir}: {exc.strerror or exc}") from None

    try:
        if sha256 is not None:
            expected, origin = sha256.lower(), "the pin in cluster.release_sha256"
        else:
            warm = _warm_release(want)  # no request at all
            if warm is not None:
                return warm
            expected, origin = _expected_from_sums(want)
        kept = _kept_release(want, expected, origin, note)
        if kept is not None:
            return kept
        return _download(want, expected, progress, pinned=bool(sha256))
    except OSError as exc:
        raise PreflightError(f"cannot write release cache {vdir}: {exc.strerror or exc}") from None
    finally:
        source.close()


@dataclass(frozen=True)
class _Wanted:
    """The tarball one `fetch_release` call wants, where it comes from and where it is kept."""

    version: str
    arch: str
    source: _Source
    vdir: Path  # {cache}/v{version}

    @property
    def name(self) -> str:
        return tarball_name(self.version, self.arch)

    @property
    def top_dir(self) -> str:
        return top_dir_name(self.version, self.arch)

    @property
    def final(self) -> Path:
        return self.vdir / self.name

    @property
    def rel_tar(self) -> str:
        return f"v{self.version}/{self.name}"

    @property
    def rel_sums(self) -> str:
        return f"v{self.version}/{SUMS_NAME}"

    @property
    def tar_where(self) -> str:
        return self.source.where(self.rel_tar)

    def not_found(self, exc: _NotFound) -> PreflightError:
        return PreflightError(
            f"etcd {self.version} for linux-{self.arch} not found at {self.tar_where}{exc.suffix()}"
        )


def _finish(want: _Wanted, path: Path, sha: str, size: int) -> Release:
    """The release in `path` (its final place, or the download before it is moved there),
    its layout checked. The layout check reads the whole archive: its result is kept beside
    the tarball, keyed by the tarball's sha256, so a warm run does not pay for it again."""
    checked = path.with_name(path.name + ".layout")
    record = checked.read_text().split() if checked.exists() else []
    if record[:1] == [sha]:
        return Release(
            want.version, want.arch, want.final, sha, size, want.top_dir, tuple(record[1:])
        )
    try:
        binaries = verify_layout(path, want.top_dir)
    except ValueError as exc:
        raise PreflightError(
            f"bad etcd release tarball {want.name} from {want.tar_where}: {exc}"
        ) from None
    checked.write_text(" ".join((sha, *binaries)) + "\n")
    return Release(want.version, want.arch, want.final, sha, size, want.top_dir, binaries)


def _warm_release(want: _Wanted) -> Release | None:
    """The cached tarball when the cached SHA256SUMS from this source vouches for it."""
    sums = _cached_sums(want.vdir, want.source.key)
    if sums is not None and want.name in sums:
        cached = _sha256_if_file(want.final)
        if cached is not None and cached[0] == sums[want.name]:
            return _finish(want, want.final, *cached)
    return None


def _expected_from_sums(want: _Wanted) -> tuple[str, str]:
    """The tarball's sha256 in a fresh SHA256SUMS from the source (then cached), and where
    it came from."""
    sums_where = want.source.where(want.rel_sums)
    try:
        data = want.source.read_small(want.rel_sums)
    except _NotFound as exc:
        if want.source.exists(want.rel_tar) is False:
            raise want.not_found(exc) from None
        raise PreflightError(
            f"no SHA256SUMS for etcd {want.version} at {sums_where}{exc.suffix()}: "
            f"cannot verify {want.name}"
        ) from None
    sums = parse_sha256sums(data.decode("utf-8", "replace"))
    found = sums.get(want.name)
    if found is None:
        raise PreflightError(f"SHA256SUMS at {sums_where} has no entry for {want.name}")
    _store_sums(want.vdir, want.source.key, data)
    return found, f"SHA256SUMS from {sums_where}"


def _kept_release(want: _Wanted, expected: str, origin: str, note: Log) -> Release | None:
    """A cached tarball that still matches is kept; one that does not is deleted (to be
    fetched again)."""
    final = want.final
    cached = _sha256_if_file(final)
    if cached is None:
        return None
    if cached[0] == expected:
        return _finish(want, final, *cached)
    note(
        f"cached {final} does not match {origin} "
        f"(expected {expected}, got {cached[0]}): deleting it and downloading again"
    )
    with contextlib.suppress(FileNotFoundError):
        final.unlink()
    return None


def _download(want: _Wanted, expected: str, progress: Progress | None, *, pinned: bool) -> Release:
    """Download the tarball to a unique `.part`, check it, then move it into place."""
    _sweep_stale_parts(want.vdir)
    part = _part_path(want.final)
    try:
        with open(part, "wb") as out:
            try:
                actual = want.source.copy_to(want.rel_tar, out, progress)
            except _NotFound as exc:
                raise want.not_found(exc) from None
            out.flush()
            os.fsync(out.fileno())
        if actual != expected:
            raise PreflightError(
                f"checksum mismatch for {want.name} from {want.tar_where}: "
                f"expected {expected}, got {actual}"
                + (" (expected: the pin in cluster.release_sha256)" if pinned else "")
            )
        release = _finish(want, part, actual, part.stat().st_size)
        os.replace(part, want.final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    fsync_dir(want.vdir)
    return release
