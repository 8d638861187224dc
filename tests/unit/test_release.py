"""adapters.release: download, verify and cache etcd release tarballs (127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.adapters.release import (
    Release,
    arch_for,
    default_cache_dir,
    fetch_release,
    tarball_name,
)
from orchestrator.core.errors import PreflightError
from orchestrator.core.rules import version_problem
from tests.lab.mirror import serve_mirror, write_release

V = "3.5.1"
NAME = "etcd-v3.5.1-linux-amd64.tar.gz"
FILES = {
    "etcd": (b"#!/bin/sh\necho 'etcd Version: 3.5.1'\n", 0o755),
    "etcdctl": (b"#!/bin/sh\necho 'etcdctl version: 3.5.1'\n", 0o755),
    "etcdutl": (b"#!/bin/sh\necho 'etcdutl version: 3.5.1'\n", 0o755),
    "README.md": (b"fake\n", 0o644),
}
OTHER_LINE = "0" * 64 + "  etcd-v3.5.1-linux-arm64.tar.gz\n"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A release folder holding a tiny fake 3.5.1 in the official layout."""
    root = tmp_path / "src"
    write_release(root, V, FILES, sums_extra=OTHER_LINE)
    return root


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def served(source: Path) -> Iterator[tuple[str, list[str]]]:
    """(base URL, request log) of `source` served on 127.0.0.1."""
    requests: list[str] = []
    with serve_mirror(source, requests=requests) as url:
        yield url, requests


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _custom_tarball(root: Path, members: list[tuple[str, bytes | None]]) -> None:
    """Write NAME with arbitrary members (None = folder) and a matching SHA256SUMS."""
    vdir = root / f"v{V}"
    vdir.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    blob = raw.getvalue()
    (vdir / NAME).write_bytes(blob)
    (vdir / "SHA256SUMS").write_text(f"{hashlib.sha256(blob).hexdigest()}  {NAME}\n")


# --------------------------------------------------------------------------------------------


def test_arch_for() -> None:
    assert arch_for("x86_64") == "amd64"
    assert arch_for("aarch64\n") == "arm64"
    assert arch_for("arm64") == "arm64"
    assert arch_for("ppc64le") == "ppc64le"
    assert arch_for("s390x") == "s390x"
    with pytest.raises(PreflightError, match="unsupported machine architecture 'i686'"):
        arch_for("i686")


def test_names_and_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert tarball_name("3.5.1", "amd64") == NAME
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "etcd-deploy" / "releases"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "etcd-deploy" / "releases"


def test_download_verify_and_cache(
    served: tuple[str, list[str]], source: Path, cache: Path
) -> None:
    url, requests = served
    seen: list[tuple[int, int | None]] = []
    rel = fetch_release(
        url + "/", V, "amd64", cache_dir=cache, progress=lambda d, t: seen.append((d, t))
    )
    src = source / f"v{V}" / NAME
    assert rel == Release(
        version=V,
        arch="amd64",
        path=cache / f"v{V}" / NAME,
        sha256=_sha(src),
        size=src.stat().st_size,
        top_dir="etcd-v3.5.1-linux-amd64",
        binaries=("etcd", "etcdctl", "etcdutl"),
    )
    assert rel.path.read_bytes() == src.read_bytes()
    assert (cache / f"v{V}" / "SHA256SUMS").read_bytes() == (src.parent / "SHA256SUMS").read_bytes()
    assert not list(rel.path.parent.glob("*.part"))
    assert seen[0] == (0, rel.size) and seen[-1] == (rel.size, rel.size)
    assert requests == [f"GET /v{V}/SHA256SUMS", f"GET /v{V}/{NAME}"]


def test_warm_cache_makes_no_request(served: tuple[str, list[str]], cache: Path) -> None:
    url, requests = served
    first = fetch_release(url, V, "amd64", cache_dir=cache)
    requests.clear()
    assert fetch_release(url, V, "amd64", cache_dir=cache) == first
    assert requests == []


def test_warm_cache_works_with_the_server_gone(source: Path, cache: Path) -> None:
    with serve_mirror(source) as url:
        first = fetch_release(url, V, "amd64", cache_dir=cache)
    assert fetch_release(url, V, "amd64", cache_dir=cache) == first


def test_corrupt_cached_tarball_is_fetched_again(
    served: tuple[str, list[str]], source: Path, cache: Path
) -> None:
    url, requests = served
    rel = fetch_release(url, V, "amd64", cache_dir=cache)
    rel.path.write_bytes(rel.path.read_bytes()[:-10] + b"corrupted!")
    requests.clear()
    notes: list[str] = []
    again = fetch_release(url, V, "amd64", cache_dir=cache, log=notes.append)
    assert again == rel
    assert _sha(again.path) == rel.sha256
    assert len(notes) == 1 and "does not match SHA256SUMS" in notes[0] and NAME in notes[0]
    assert requests == [f"GET /v{V}/SHA256SUMS", f"GET /v{V}/{NAME}"]


def test_corrupt_cached_sums_are_refreshed(served: tuple[str, list[str]], cache: Path) -> None:
    url, requests = served
    rel = fetch_release(url, V, "amd64", cache_dir=cache)
    (cache / f"v{V}" / "SHA256SUMS").write_text("garbage\n")
    requests.clear()
    assert fetch_release(url, V, "amd64", cache_dir=cache) == rel
    assert requests == [f"GET /v{V}/SHA256SUMS"]  # the cached tarball still matched


def test_other_source_is_checked_against_its_own_sums(
    served: tuple[str, list[str]], tmp_path: Path, cache: Path
) -> None:
    url, _ = served
    fetch_release(url, V, "amd64", cache_dir=cache)
    other = tmp_path / "other"
    write_release(other, V, {**FILES, "README.md": (b"another build\n", 0o644)})
    notes: list[str] = []
    rel = fetch_release(str(other), V, "amd64", cache_dir=cache, log=notes.append)
    assert rel.sha256 == _sha(other / f"v{V}" / NAME) == _sha(rel.path)
    assert len(notes) == 1


def test_checksum_mismatch(served: tuple[str, list[str]], source: Path, cache: Path) -> None:
    url, _ = served
    sums = source / f"v{V}" / "SHA256SUMS"
    sums.write_text("ab" * 32 + f"  {NAME}\n")
    actual = _sha(source / f"v{V}" / NAME)
    with pytest.raises(PreflightError) as err:
        fetch_release(url, V, "amd64", cache_dir=cache)
    assert str(err.value) == (
        f"checksum mismatch for {NAME} from {url}/v{V}/{NAME}: expected {'ab' * 32}, got {actual}"
    )
    assert not (cache / f"v{V}" / NAME).exists()
    assert not list((cache / f"v{V}").glob("*.part"))


def test_version_not_found(served: tuple[str, list[str]], cache: Path) -> None:
    url, _ = served
    with pytest.raises(PreflightError) as err:
        fetch_release(url, "3.5.99", "amd64", cache_dir=cache)
    assert str(err.value) == (
        f"etcd 3.5.99 for linux-amd64 not found at "
        f"{url}/v3.5.99/etcd-v3.5.99-linux-amd64.tar.gz (HTTP 404)"
    )


def test_no_sha256sums(served: tuple[str, list[str]], source: Path, cache: Path) -> None:
    url, _ = served
    (source / f"v{V}" / "SHA256SUMS").unlink()
    with pytest.raises(PreflightError, match=r"^no SHA256SUMS for etcd 3\.5\.1 at .*\(HTTP 404\)"):
        fetch_release(url, V, "amd64", cache_dir=cache)


def test_name_missing_from_sha256sums(
    served: tuple[str, list[str]], source: Path, cache: Path
) -> None:
    url, _ = served
    (source / f"v{V}" / "SHA256SUMS").write_text(OTHER_LINE)
    with pytest.raises(PreflightError) as err:
        fetch_release(url, V, "amd64", cache_dir=cache)
    assert str(err.value) == f"SHA256SUMS at {url}/v{V}/SHA256SUMS has no entry for {NAME}"


def test_local_folder_and_file_url(source: Path, cache: Path) -> None:
    by_path = fetch_release(str(source), V, "amd64", cache_dir=cache / "a")
    by_url = fetch_release(source.as_uri(), V, "amd64", cache_dir=cache / "b")
    assert by_path.sha256 == by_url.sha256 == _sha(source / f"v{V}" / NAME)
    assert by_path.path.is_file() and by_url.path.is_file()
    with pytest.raises(PreflightError, match=r"etcd 3\.4\.0 for linux-amd64 not found at /"):
        fetch_release(str(source), "3.4.0", "amd64", cache_dir=cache / "a")
    with pytest.raises(PreflightError, match="unsupported release_url"):
        fetch_release("ftp://example.invalid/x", V, "amd64", cache_dir=cache)


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ([("etcd-v3.5.1-linux-amd64/etcd", b"x")], "missing etcd-v3.5.1-linux-amd64/etcdctl"),
        ([("etcd-v3.5.2-linux-amd64/etcd", b"x")], "outside the top folder"),
        ([("/etc/passwd", b"x")], "absolute"),
        ([("etcd-v3.5.1-linux-amd64/../../evil", b"x")], "contains '..'"),
        ([("etcd-v3.5.1-linux-amd64/etcd", None)], "not a regular file"),
    ],
)
def test_bad_layout(source: Path, cache: Path, members: list, problem: str) -> None:
    _custom_tarball(source, members)
    with pytest.raises(PreflightError, match=r"^bad etcd release tarball") as err:
        fetch_release(str(source), V, "amd64", cache_dir=cache)
    assert problem in str(err.value)
    assert not (cache / f"v{V}" / NAME).exists()
    assert not list((cache / f"v{V}").glob("*.part"))


def test_etcd_34_layout_without_etcdutl(tmp_path: Path, cache: Path) -> None:
    files = {k: v for k, v in FILES.items() if k != "etcdutl"}
    write_release(tmp_path, "3.4.23", files)
    rel = fetch_release(str(tmp_path), "3.4.23", "amd64", cache_dir=cache)
    assert rel.binaries == ("etcd", "etcdctl")
    assert rel.top_dir == "etcd-v3.4.23-linux-amd64"


def test_connection_refused_names_url(cache: Path) -> None:
    url = _closed_port_url()
    with pytest.raises(PreflightError, match=f"^cannot connect to {url}/v{V}/SHA256SUMS"):
        fetch_release(url, V, "amd64", cache_dir=cache)


def test_timeout_names_url(cache: Path) -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(PreflightError, match=f"^timed out after 0.1s fetching {url}/"):
            fetch_release(url, V, "amd64", cache_dir=cache, timeout=0.1)


def test_invalid_version_and_arch(cache: Path) -> None:
    with pytest.raises(PreflightError, match="invalid etcd version"):
        fetch_release("/nowhere", "3.5/../../x", "amd64", cache_dir=cache)
    with pytest.raises(PreflightError, match="unsupported etcd architecture"):
        fetch_release("/nowhere", V, "x86_64", cache_dir=cache)


def test_concurrent_fetches_share_the_cache(
    served: tuple[str, list[str]], source: Path, cache: Path
) -> None:
    url, _ = served
    results: list[Release] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(fetch_release(url, V, "amd64", cache_dir=cache))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({r.sha256 for r in results}) == 1
    assert _sha(cache / f"v{V}" / NAME) == _sha(source / f"v{V}" / NAME)
    assert not list((cache / f"v{V}").glob("*.part"))


# -------------------------------------------------------------------------------- pins, redaction


def test_a_pinned_tarball_needs_no_sha256sums(
    served: tuple[str, list[str]], source: Path, cache: Path
) -> None:
    url, requests = served
    (source / f"v{V}" / "SHA256SUMS").unlink()
    pin = _sha(source / f"v{V}" / NAME)
    rel = fetch_release(url, V, "amd64", cache_dir=cache, sha256=pin.upper())
    assert rel.sha256 == pin
    assert requests == [f"GET /v{V}/{NAME}"]
    requests.clear()
    assert fetch_release(url, V, "amd64", cache_dir=cache, sha256=pin) == rel
    assert requests == []  # the cached tarball matches its pin


def test_a_pin_that_does_not_match_is_refused(
    served: tuple[str, list[str]], source: Path, cache: Path
) -> None:
    url, _ = served
    actual = _sha(source / f"v{V}" / NAME)
    with pytest.raises(PreflightError) as caught:
        fetch_release(url, V, "amd64", cache_dir=cache, sha256="cd" * 32)
    message = str(caught.value)
    assert f"checksum mismatch for {NAME}" in message
    assert f"expected {'cd' * 32}, got {actual} (expected: the pin in cluster.release_sha256)" in (
        message
    )
    assert not list((cache / f"v{V}").glob(NAME + "*"))


def test_plain_http_elsewhere_needs_a_pin(cache: Path) -> None:
    with pytest.raises(PreflightError) as caught:
        fetch_release("http://u:hunter2@192.0.2.1/etcd", V, "amd64", cache_dir=cache, timeout=0.1)
    message = str(caught.value)
    assert "release_url http://u:***@192.0.2.1/etcd is plain http:// on another machine" in message
    assert f'("{V}/amd64" = "<sha256>")' in message
    assert "hunter2" not in message


def test_a_password_in_the_url_is_never_printed_nor_stored(
    served: tuple[str, list[str]], cache: Path
) -> None:
    url, _ = served
    secret_url = url.replace("http://", "http://deploy:hunter2@")
    fetch_release(secret_url, V, "amd64", cache_dir=cache)
    marker = (cache / f"v{V}" / "SHA256SUMS.source").read_text()
    assert "hunter2" not in marker
    assert url.replace("http://", "http://deploy:***@") in marker
    with pytest.raises(PreflightError) as caught:
        fetch_release(secret_url, "3.5.99", "amd64", cache_dir=cache)
    assert "hunter2" not in str(caught.value)
    assert "deploy:***@" in str(caught.value)
    with pytest.raises(PreflightError) as caught:
        fetch_release(_closed_port_url().replace("//", "//a:hunter2@"), V, "arm64", cache_dir=cache)
    assert "hunter2" not in str(caught.value) and "a:***@" in str(caught.value)


@pytest.mark.parametrize("version", ["v3.5.18", "3.6.0-rc.1", "3.3.25"])
def test_release_versions_follow_the_one_rule(cache: Path, version: str) -> None:
    with pytest.raises(PreflightError) as caught:
        fetch_release("/nowhere", version, "amd64", cache_dir=cache)
    assert str(caught.value) == f"etcd release: {version_problem(version)}"
