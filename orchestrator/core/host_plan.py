"""Desired state vs. a host's facts -> the changes to make, each with a reason, and a no-op
reason for everything left alone. Pure: `plan` prints it, `up` executes it."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.core.facts import HostFacts
from orchestrator.core.host_paths import (
    UNIT_PATH,
    env_path,
    etcdctl_env_path,
    pki_dir,
    wrapper_path,
)
from orchestrator.core.inventory import Host, Inventory
from orchestrator.core.ownership import MARKER_NAME, Marker
from orchestrator.core.render import (
    env_without_initial,
    pki_paths,
    render_etcdctl_env,
    render_etcdctl_wrapper,
    render_unit,
)
from orchestrator.core.versions import Version


@dataclass(frozen=True)
class DesiredFile:
    path: str
    content: bytes
    mode: int
    owner: str
    group: str
    kind: str  # "unit", "env", "etcdctl-env", "wrapper", "ca", "cert", "key", "marker"

    @property
    def secret(self) -> bool:
        return self.kind == "key"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


SYMLINK_REPLACED = "a symlink on the host: replaced by the file, its target left alone"


@dataclass(frozen=True)
class FileChange:
    file: DesiredFile
    reason: str
    diff: str = ""  # unified diff for non-secret files that exist on the host

    @property
    def content_changed(self) -> bool:
        """False for a mode/owner fix, which never needs a restart."""
        return self.reason in ("missing", "content differs", SYMLINK_REPLACED)


@dataclass
class HostPlan:
    host: str
    prepare: str = ""  # why the etcd user or directories need work ("" = nothing)
    install: str = ""  # why binaries are (re)installed
    files: list[FileChange] = field(default_factory=list)
    restart_reasons: list[str] = field(default_factory=list)  # for a running member
    membership: str = ""  # "bootstrap", "join", "start", ""
    enable: bool = False  # etcd.service is not enabled at boot
    noops: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(
            self.prepare
            or self.install
            or self.files
            or self.restart_reasons
            or self.membership
            or self.enable
        )

    @property
    def written_now(self) -> list[FileChange]:
        """The file changes of the install (the others wait for their host's turn)."""
        deferred = self.deferred
        return [c for c in self.files if c not in deferred]

    def install_summary(self, *, done: bool) -> str:
        """What the install does on the host ("" when nothing): to do, or `done`."""
        files = self.written_now
        parts = []
        if self.prepare:
            verb = "prepared" if done else "prepare"
            parts.append(f"{verb} the etcd user and directories ({self.prepare})")
        if self.install:
            parts.append(f"{'installed' if done else 'install'} {self.install}")
        if files:
            kinds = ", ".join(sorted({c.file.kind for c in files}))
            parts.append(f"{'wrote' if done else 'write'} {len(files)} file(s): {kinds}")
        return "; ".join(parts)

    @property
    def deferred(self) -> list[FileChange]:
        """Changes written at this host's turn rather than in the parallel install: a
        joiner's env (it needs the member list of its join), and a running member's env
        and unit (written just before its rolling restart, rolled back if etcd fails)."""
        if self.membership == "join":
            kinds = {"env"}
        elif self.restart_reasons:
            kinds = {"env", "unit"}
        else:
            kinds = set()
        return [c for c in self.files if c.file.kind in kinds]


def desired_dirs(inv: Inventory) -> dict[str, tuple[int, str, str]]:
    """Directories etcd-deploy owns on a host: path -> (mode, owner, group)."""
    c = inv.cluster
    return {
        c.install_dir: (0o755, "root", "root"),
        c.config_dir: (0o755, "root", "root"),
        pki_dir(inv): (0o700, "etcd", "etcd"),
        c.data_dir: (0o700, "etcd", "etcd"),
    }


def env_file(inv: Inventory, env: str) -> DesiredFile:
    """{config_dir}/etcd.env: readable by etcd, not by everyone (it names every cert path)."""
    return DesiredFile(env_path(inv), env.encode(), 0o640, "root", "etcd", "env")


def marker_files(inv: Inventory, marker: Marker) -> list[DesiredFile]:
    """The ownership markers in the data and config dirs (see `ownership.py`)."""
    content = marker.render().encode()
    return [
        DesiredFile(f"{d}/{MARKER_NAME}", content, 0o644, "root", "root", "marker")
        for d in (inv.cluster.data_dir, inv.cluster.config_dir)
    ]


def desired_files(
    inv: Inventory,
    host: Host,
    *,
    env: str,
    ca_pem: bytes,
    certs: Mapping[str, tuple[bytes, bytes]],
    marker: Marker,
) -> list[DesiredFile]:
    """Every file etcd-deploy writes on `host`. `certs`: kind -> (cert PEM, key PEM)."""
    files = [
        *marker_files(inv, marker),
        DesiredFile(UNIT_PATH, render_unit(inv).encode(), 0o644, "root", "root", "unit"),
        env_file(inv, env),
        DesiredFile(
            etcdctl_env_path(inv),
            render_etcdctl_env(inv, host).encode(),
            0o644,
            "root",
            "root",
            "etcdctl-env",
        ),
        DesiredFile(
            wrapper_path(inv),
            render_etcdctl_wrapper(inv).encode(),
            0o755,
            "root",
            "root",
            "wrapper",
        ),
        ca_file(inv, ca_pem),
    ]
    return files + cert_files(inv, certs)


def ca_file(inv: Inventory, ca_pem: bytes) -> DesiredFile:
    """The CA (or, during a CA rotation, the old+new bundle) every member trusts."""
    return DesiredFile(pki_paths(inv)["ca.crt"], ca_pem, 0o644, "etcd", "etcd", "ca")


def cert_files(inv: Inventory, certs: Mapping[str, tuple[bytes, bytes]]) -> list[DesiredFile]:
    """Leaf certs (0644) and their keys (0600), owned by etcd. `certs`: kind -> (cert, key)."""
    paths = pki_paths(inv)
    files = []
    for kind, (cert, key) in certs.items():
        files.append(DesiredFile(paths[f"{kind}.crt"], cert, 0o644, "etcd", "etcd", "cert"))
        files.append(DesiredFile(paths[f"{kind}.key"], key, 0o600, "etcd", "etcd", "key"))
    return files


def _file_change(want: DesiredFile, facts: HostFacts, running_member: bool) -> FileChange | None:
    if want.path in facts.links:
        return FileChange(want, SYMLINK_REPLACED)
    have = facts.files.get(want.path)
    if have is None:
        return FileChange(want, "missing")
    old = facts.texts.get(want.path)
    # ETCD_INITIAL_* only matter at a member's first start: never rewrite or restart for them.
    initial_only = (
        want.kind == "env"
        and running_member
        and old is not None
        and env_without_initial(old) == env_without_initial(want.content.decode())
    )
    if have.sha256 != want.sha256 and not initial_only:
        diff = ""
        if not want.secret and old is not None:
            diff = "".join(
                difflib.unified_diff(
                    old.splitlines(keepends=True),
                    want.content.decode().splitlines(keepends=True),
                    fromfile=f"{want.path} (host)",
                    tofile=f"{want.path} (wanted)",
                )
            )
        return FileChange(want, "content differs", diff)
    if (have.mode, have.owner, have.group) != (want.mode, want.owner, want.group):
        return FileChange(
            want,
            f"mode/owner {have.mode:04o} {have.owner}:{have.group} -> "
            f"{want.mode:04o} {want.owner}:{want.group}",
        )
    return None


def plan_host(
    inv: Inventory,
    host: Host,
    files: list[DesiredFile],
    facts: HostFacts,
    *,
    version: Version,
    member: bool,
    bootstrap: bool,
) -> HostPlan:
    """What `up` would do on one host. `member`: the host is in the cluster's member list."""
    plan = HostPlan(host.name)
    running_member = member and facts.running
    if not facts.etcd_user:
        plan.prepare = "no etcd user"
    else:
        wrong = [p for p, want in desired_dirs(inv).items() if facts.dirs.get(p) != want]
        if wrong:
            plan.prepare = "directories missing or with wrong mode/owner: " + ", ".join(wrong)
    if facts.etcd_version != str(version):  # the host reports its version as text
        plan.install = (
            f"etcd {version} (installed: {facts.etcd_version})"
            if facts.etcd_version
            else f"etcd {version} (not installed)"
        )
    else:
        plan.noops.append(f"etcd {version} already installed")
    for want in files:
        change = _file_change(want, facts, running_member)
        if change:
            plan.files.append(change)
    if not plan.files:
        plan.noops.append(f"all {len(files)} files up to date")
    if running_member:
        # etcd re-reads its cert files on each TLS handshake: new certs need no restart. It
        # loads the trusted CA file once, at start: a new CA (bundle) needs one.
        restart_kinds = {"unit", "env", "ca"}
        changed = sorted(
            {c.file.kind for c in plan.files if c.file.kind in restart_kinds and c.content_changed}
        )
        if changed:
            plan.restart_reasons.append("changed: " + ", ".join(changed))
        if plan.install:
            plan.restart_reasons.append("new binary")
        if not plan.restart_reasons:
            plan.noops.append("etcd running, no restart needed")
    elif member:
        plan.membership = "start"
    elif bootstrap:
        plan.membership = "bootstrap"
    else:
        plan.membership = "join"
    plan.enable = facts.unit_file_state != "enabled" and not plan.membership
    return plan
