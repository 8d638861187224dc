"""etcd's own snapshot tool, run on the control machine from the cached release tarball.

Only when the control machine can run the release's binaries (Linux, same architecture).
3.5+ releases ship `etcdutl`; 3.4 releases only `etcdctl`, which has the same
`snapshot status` subcommand under ETCDCTL_API=3. The binary is extracted once into

    {cache}/tools/v{version}/{etcdutl|etcdctl}          the binary (0755)
    {cache}/tools/v{version}/{name}.source              sha256 of the tarball it came from

through a unique `.part` file renamed into place, so concurrent callers never run a partial
binary; a tarball with another sha256 (another build of the version) extracts it again.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path, PurePosixPath

from orchestrator.adapters.release import ARCH_BY_UNAME, Release
from orchestrator.adapters.snapshot import SnapshotStatus, parse_status_json
from orchestrator.core.errors import PreflightError

STATUS_TIMEOUT = 600.0  # seconds; `snapshot status` reads the whole database


def can_run(release: Release) -> bool:
    """True when this machine can run `release`'s binaries (Linux, same architecture)."""
    if not sys.platform.startswith("linux"):
        return False
    return ARCH_BY_UNAME.get(platform.machine()) == release.arch


def snapshot_tool(release: Release, cache_dir: Path | None = None) -> list[str] | None:
    """argv prefix running `snapshot ...` of `release` here, or None if it cannot run here.

    `[.../etcdutl]` for 3.5+, `["env", "ETCDCTL_API=3", .../etcdctl]` for 3.4. `cache_dir`
    defaults to the release cache the tarball sits in (`release.path`'s grandparent).
    PreflightError when the tarball cannot be read or the cache cannot be written.
    """
    if not can_run(release):
        return None
    name = "etcdutl" if "etcdutl" in release.binaries else "etcdctl"
    cache = cache_dir if cache_dir is not None else release.path.parent.parent
    folder = cache.expanduser() / "tools" / f"v{release.version}"
    final = folder / name
    marker = folder / f"{name}.source"
    if not _is_current(final, marker, release.sha256):
        _extract(release, name, folder, final, marker)
    if name == "etcdutl":
        return [str(final)]
    return ["env", "ETCDCTL_API=3", str(final)]


def _is_current(final: Path, marker: Path, sha256: str) -> bool:
    try:
        return marker.read_text().strip() == sha256 and os.access(final, os.X_OK)
    except OSError:
        return False


def _member_name(raw: str) -> str:
    return "/".join(p for p in PurePosixPath(raw).parts if p != ".")


def _extract(release: Release, name: str, folder: Path, final: Path, marker: Path) -> None:
    wanted = f"{release.top_dir}/{name}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PreflightError(f"cannot create {folder}: {exc.strerror or exc}") from None
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    part = folder / f"{name}.{token}.part"
    marker_part = folder / f"{name}.source.{token}.part"
    try:
        try:
            with tarfile.open(release.path, "r:gz") as tf:
                for member in tf:
                    if _member_name(member.name) == wanted and member.isfile():
                        src = tf.extractfile(member)
                        break
                else:
                    src = None
                if src is None:
                    raise PreflightError(f"{release.path} has no regular file {wanted}")
                with src, open(part, "wb") as out:
                    shutil.copyfileobj(src, out, 1024 * 1024)
                    out.flush()
                    os.fsync(out.fileno())
        except (tarfile.TarError, EOFError) as exc:
            raise PreflightError(f"cannot read {release.path}: {exc}") from None
        os.chmod(part, 0o755)
        os.replace(part, final)
        marker_part.write_text(release.sha256 + "\n")
        os.replace(marker_part, marker)
    except OSError as exc:
        raise PreflightError(
            f"cannot extract {name} from {release.path} into {folder}: {exc.strerror or exc}"
        ) from None
    finally:
        for leftover in (part, marker_part):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def local_snapshot_status(
    tool: list[str], path: Path, *, timeout: float = STATUS_TIMEOUT
) -> SnapshotStatus:
    """Run `<tool> snapshot status <path> -w json` here and parse its output.

    PreflightError (one line, with the tool's stderr) when the tool fails or cannot run.
    """
    argv = [*tool, "snapshot", "status", str(path), "-w", "json"]
    shown = Path(tool[-1]).name
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PreflightError(
            f"{shown} snapshot status {path} did not finish within {timeout:g}s"
        ) from None
    except OSError as exc:
        raise PreflightError(f"cannot run {tool[-1]}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        err = "; ".join(line.strip() for line in proc.stderr.splitlines() if line.strip())
        raise PreflightError(
            f"{shown} snapshot status {path} failed (exit {proc.returncode}): "
            f"{err or 'no error output'}"
        )
    return parse_status_json(proc.stdout)
