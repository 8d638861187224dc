"""Text of every file etcd-deploy writes on a host (pure: no I/O).

Same inputs, same bytes: callers compare the rendered text with the remote file to decide
whether anything changed. Every file starts with the managed-by comment (the wrapper
script: right after its shebang).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from orchestrator.core.errors import UsageError
from orchestrator.core.etcd_unit import UNIT
from orchestrator.core.host_paths import (
    env_path,
    etcdctl_env_path,
    install_path,
    pki_dir,
    wrapper_path,
)
from orchestrator.core.inventory import is_ip
from orchestrator.core.rules import FLAG_NAME, SAFE_REMOTE_PATH, flag_problem, flag_value_problem
from orchestrator.core.versions import Version

if TYPE_CHECKING:
    from orchestrator.core.inventory import Host, Inventory

V3_6 = Version(3, 6, 0)

# etcd 3.6 deprecated the `experimental-*` flags (still accepted by 3.6, removed in 3.7):
# non-boolean ones were renamed without the prefix, boolean ones became feature gates.
# Source: etcd CHANGELOG-3.6 / upgrade_3_6 guide; the tables mirror etcd v3.6
# server/embed/config.go `experimentalFlagMigrationMap` and
# server/features/etcd_features.go `ExperimentalFlagToFeatureMap`.
RENAMED_IN_3_6: dict[str, str] = {
    "experimental-compact-hash-check-time": "compact-hash-check-time",
    "experimental-corrupt-check-time": "corrupt-check-time",
    "experimental-compaction-batch-limit": "compaction-batch-limit",
    "experimental-watch-progress-notify-interval": "watch-progress-notify-interval",
    "experimental-warning-apply-duration": "warning-apply-duration",
    # not in 3.6's migration map, but deprecated there for this name and gone in 3.7
    # (server/embed/config.go: "Deprecated: Use WarningUnaryRequestDuration")
    "experimental-warning-unary-request-duration": "warning-unary-request-duration",
    "experimental-bootstrap-defrag-threshold-megabytes": "bootstrap-defrag-threshold-megabytes",
    "experimental-memory-mlock": "memory-mlock",
    "experimental-snapshot-catchup-entries": "snapshot-catchup-entries",
    "experimental-compaction-sleep-interval": "compaction-sleep-interval",
    "experimental-downgrade-check-time": "downgrade-check-time",
    "experimental-peer-skip-client-san-verification": "peer-skip-client-san-verification",
    "experimental-enable-distributed-tracing": "enable-distributed-tracing",
    "experimental-distributed-tracing-address": "distributed-tracing-address",
    "experimental-distributed-tracing-service-name": "distributed-tracing-service-name",
    "experimental-distributed-tracing-instance-id": "distributed-tracing-instance-id",
    "experimental-distributed-tracing-sampling-rate": "distributed-tracing-sampling-rate",
}
FEATURE_GATES_3_6: dict[str, str] = {
    "experimental-initial-corrupt-check": "InitialCorruptCheck",
    "experimental-compact-hash-check-enabled": "CompactHashCheck",
    "experimental-txn-mode-write-with-shared-buffer": "TxnModeWriteWithSharedBuffer",
    "experimental-stop-grpc-service-on-defrag": "StopGRPCServiceOnDefrag",
    "experimental-enable-lease-checkpoint": "LeaseCheckpoint",
    "experimental-enable-lease-checkpoint-persist": "LeaseCheckpointPersist",
}
# Removed in 3.6 (the v2 store, the v2 API and the v2 proxy are gone; etcd v3.6
# server/etcdmain/config.go against v3.5's), with what to do instead. "proxy" is a prefix.
REMOVED_IN_3_6: dict[str, str] = {
    "enable-v2": "the v2 API is gone: remove the key (the upgrade checks the v2 store first, "
    "as upstream's 3.6 upgrade guide asks)",
    "experimental-enable-v2v3": "the v2 emulation is gone: remove the key",
    "proxy": "the v2 proxy is gone: remove the key (run `etcd grpc-proxy` apart if you need "
    "a proxy)",
}
# Removed in 3.7 beyond the experimental-* flags (renamed above): the v2 discovery proxy
# (CHANGELOG-3.7, etcd v3.7 server/etcdmain/config.go).
REMOVED_IN_3_7: dict[str, str] = {
    "discovery-proxy": "v2 discovery is gone: remove the key",
}
V3_7 = Version(3, 7, 0)
# The first 3.5 with --experimental-compact-hash-check-enabled (CHANGELOG-3.5, v3.5.5).
V3_5_COMPACT_HASH_CHECK = Version(3, 5, 5)

# The leaf certs each host gets; `pki` issues them, `pki_paths` names their files.
HOST_CERT_KINDS: tuple[str, ...] = (
    "server",
    "peer",
    "etcdctl-etcd-client",
    "apiserver-etcd-client",
)


def _header(inv: Inventory) -> str:
    return (
        f"# Managed by etcd-deploy (cluster {inv.cluster.name}): "
        "changes are overwritten by the next run."
    )


def _safe_path(key: str, value: str) -> str:
    """An absolute path usable unquoted in a unit file, an EnvironmentFile and sh."""
    if not SAFE_REMOTE_PATH.fullmatch(value):
        raise UsageError(
            f"{key} = {value!r}: expected an absolute path of letters, digits and ._/@+- "
            "(no spaces or quotes)"
        )
    return value.rstrip("/") or "/"


def _env_value(key: str, value: str) -> str:
    """A value safe to write unquoted in a systemd EnvironmentFile."""
    problem = flag_value_problem(value)
    if problem is not None:
        raise UsageError(f"{key}: {problem}")
    return value


def pki_paths(inv: Inventory) -> dict[str, str]:
    """Remote paths: "ca.crt" and "<kind>.crt" / "<kind>.key" for each host cert kind."""
    _safe_path("cluster.config_dir", inv.cluster.config_dir)  # checked: written unquoted
    base = pki_dir(inv)
    paths = {"ca.crt": posixpath.join(base, "ca.crt")}
    for kind in HOST_CERT_KINDS:
        paths[f"{kind}.crt"] = posixpath.join(base, f"{kind}.crt")
        paths[f"{kind}.key"] = posixpath.join(base, f"{kind}.key")
    return paths


def removed_flag_problem(flag: str, version: Version) -> str | None:
    """Why etcd `version` no longer has --`flag` and what to do instead, or None."""
    removed: list[tuple[Version, dict[str, str]]] = [(V3_6, REMOVED_IN_3_6), (V3_7, REMOVED_IN_3_7)]
    for since, table in removed:
        if version < since:
            continue
        for name, instead in table.items():
            if flag == name or (name == "proxy" and flag.startswith("proxy")):
                removed_in = f"{since.major}.{since.minor}"
                return f"--{flag} was removed in etcd {removed_in} (target {version}): {instead}"
    return None


def default_flags(version: Version) -> dict[str, str]:
    """Flags etcd-deploy sets unless [cluster.flags] sets the same flag or gate, spelled as
    [cluster.flags] would (`resolve_flags` renames them for `version` like the user's).

    - Corruption checks on (etcd leaves them off): at start a member compares its hash with
      its peers' and refuses to serve on a mismatch (every 3.4+); the leader compares the
      hashes of compacted revisions periodically and raises the CORRUPT alarm (3.5.5+).
      From 3.6 on they are the feature gates InitialCorruptCheck and CompactHashCheck.
    - 3.4 only: the zap logger and no v2 API (3.5 changed both defaults).
    """
    flags = {"experimental-initial-corrupt-check": "true"}
    if version >= V3_5_COMPACT_HASH_CHECK:
        flags["experimental-compact-hash-check-enabled"] = "true"
    if version.minor_line == (3, 4):
        flags |= {"logger": "zap", "enable-v2": "false"}
    return flags


def _flag_str(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _normalize_flag(name: str) -> str:
    norm = name.strip().lstrip("-").lower().replace("_", "-")
    if not FLAG_NAME.fullmatch(norm):
        raise UsageError(f"cluster.flags.{name}: not a valid etcd flag name")
    return norm


def _split_gates(key: str, text: str) -> dict[str, str]:
    gates: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        gate, sep, val = item.partition("=")
        if not sep or not gate:
            raise UsageError(f"{key} = {text!r}: expected Gate=true|false[,Gate=...]")
        gates[gate.strip()] = val.strip()
    return gates


def resolve_flags(
    flags: Mapping[str, object],
    version: Version,
    host_defaults: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """`default_flags` (and a host's own `host_defaults`, e.g. its metrics URLs) with
    [cluster.flags] on top, as (flag name, value) for etcd `version`, sorted by flag name.

    Refuses managed flags, flags removed in the target version (naming what to do instead)
    and values that cannot be written to an EnvironmentFile. For 3.6+, deprecated
    `experimental-*` flags become their new names or feature gates (merged into
    `feature-gates`); below 3.6 the new names of renamed flags are written with their
    `experimental-` spelling. A default gives way to a user key that sets the same flag or
    gate.
    """
    new36 = version >= V3_6
    reverse = {v: k for k, v in RENAMED_IN_3_6.items()}
    out: dict[str, tuple[str, str]] = {}  # flag -> (value, original key)
    gates: dict[str, tuple[str, str]] = {}  # gate -> (value, original key)

    def put(flag: str, value: str, key: str) -> None:
        if flag in out:
            raise UsageError(
                f"{key} and {out[flag][1]} both set etcd flag --{flag} for etcd {version}; keep one"
            )
        out[flag] = (value, key)

    def put_gate(gate: str, value: str, key: str) -> None:
        if gate in gates:
            raise UsageError(f"{key}: {gate} is also set by {gates[gate][1]}; keep one")
        gates[gate] = (value, key)

    for raw_name, raw_value in flags.items():
        key = f"cluster.flags.{raw_name}"
        name = _normalize_flag(raw_name)
        value = _env_value(key, _flag_str(raw_value))
        problem = flag_problem(name) or removed_flag_problem(name, version)
        if problem is not None:
            raise UsageError(f"{key}: {problem}")
        if name == "feature-gates":
            if not new36:
                raise UsageError(
                    f"{key}: feature gates need etcd 3.6 or later (target {version}); use the "
                    "experimental-* flags instead"
                )
            for gate, val in _split_gates(key, value).items():
                put_gate(gate, val, key)
        elif new36 and name in FEATURE_GATES_3_6:
            put_gate(FEATURE_GATES_3_6[name], value, key)
        else:
            put(RENAMED_IN_3_6.get(name, name) if new36 else reverse.get(name, name), value, key)

    for name, value in {**default_flags(version), **(host_defaults or {})}.items():
        if new36 and name in FEATURE_GATES_3_6:
            gates.setdefault(FEATURE_GATES_3_6[name], (value, "default"))
        else:
            out.setdefault(RENAMED_IN_3_6.get(name, name) if new36 else name, (value, "default"))

    if gates:
        first_key = min(k for _, k in gates.values())
        put("feature-gates", ",".join(f"{g}={v}" for g, (v, _) in sorted(gates.items())), first_key)
    return [(flag, value) for flag, (value, _) in sorted(out.items())]


def _env_name(flag: str) -> str:
    return "ETCD_" + flag.upper().replace("-", "_")


def render_etcd_env(
    inv: Inventory,
    host: Host,
    *,
    initial_cluster: Sequence[tuple[str, str]],
    initial_state: str,
    token: str,
    version: Version,
) -> str:
    """{config_dir}/etcd.env for `host`, read by etcd.service.

    `initial_cluster` lists (name, peer URL) of the members the host starts with (itself
    included); `version` is the etcd version the file is for (the upgrade target).
    ETCD_INITIAL_* only matter at a member's first start: compare renders through
    `env_without_initial` to decide whether a running member needs a restart.
    A host whose etcd_address is a DNS name listens on 0.0.0.0 and advertises the name.
    """
    if initial_state not in ("new", "existing"):
        raise ValueError(f"initial_state must be 'new' or 'existing', got {initial_state!r}")
    if not initial_cluster:
        raise ValueError("initial_cluster is empty")
    for name, url in initial_cluster:
        if not name or any(c in name + url for c in ",= \n"):
            raise ValueError(f"bad initial_cluster entry {(name, url)!r}")
    if host.name not in {name for name, _ in initial_cluster}:
        raise ValueError(f"initial_cluster does not list {host.name}")
    if not token or any(c.isspace() for c in token):
        raise ValueError(f"bad initial cluster token {token!r}")

    c = inv.cluster
    pki = pki_paths(inv)
    data_dir = _safe_path("cluster.data_dir", c.data_dir)
    peer_url = inv.peer_url(host)
    client_url = inv.client_url(host)
    local_client = f"https://127.0.0.1:{c.client_port}"
    if is_ip(host.etcd_address):
        listen_peer = peer_url
        listen_client = [client_url] if client_url == local_client else [client_url, local_client]
    else:  # etcd binds IPs only: listen everywhere, advertise the name
        listen_peer = f"https://0.0.0.0:{c.peer_port}"
        listen_client = [f"https://0.0.0.0:{c.client_port}"]

    lines = [
        _header(inv),
        f"ETCD_NAME={host.name}",
        f"ETCD_DATA_DIR={data_dir}",
        f"ETCD_LISTEN_PEER_URLS={listen_peer}",
        f"ETCD_LISTEN_CLIENT_URLS={','.join(listen_client)}",
        f"ETCD_ADVERTISE_CLIENT_URLS={client_url}",
        f"ETCD_INITIAL_ADVERTISE_PEER_URLS={peer_url}",
        "ETCD_INITIAL_CLUSTER=" + ",".join(f"{n}={u}" for n, u in initial_cluster),
        f"ETCD_INITIAL_CLUSTER_STATE={initial_state}",
        f"ETCD_INITIAL_CLUSTER_TOKEN={token}",
        "ETCD_CLIENT_CERT_AUTH=true",
        f"ETCD_TRUSTED_CA_FILE={pki['ca.crt']}",
        f"ETCD_CERT_FILE={pki['server.crt']}",
        f"ETCD_KEY_FILE={pki['server.key']}",
        "ETCD_PEER_CLIENT_CERT_AUTH=true",
        f"ETCD_PEER_TRUSTED_CA_FILE={pki['ca.crt']}",
        f"ETCD_PEER_CERT_FILE={pki['peer.crt']}",
        f"ETCD_PEER_KEY_FILE={pki['peer.key']}",
        "ETCD_STRICT_RECONFIG_CHECK=true",
    ]
    metrics = metrics_urls(inv, host)
    own = {"listen-metrics-urls": ",".join(metrics)} if metrics else {}
    lines.append("# etcd-deploy's defaults and [cluster.flags]")
    lines += [f"{_env_name(flag)}={value}" for flag, value in resolve_flags(c.flags, version, own)]
    return "\n".join(lines) + "\n"


def metrics_urls(inv: Inventory, host: Host) -> list[str]:
    """Where a member serves /metrics and /health on plain HTTP (`cluster.metrics`): no
    keys or values there, only counters and timings. "host" adds the member's own address
    (all addresses for a DNS name) for a scraper on the network."""
    c = inv.cluster
    local = f"http://127.0.0.1:{c.metrics_port}"
    if c.metrics == "off":
        return []
    if c.metrics == "local" or host.etcd_address == "127.0.0.1":
        return [local]
    if not is_ip(host.etcd_address):  # etcd binds IPs only
        return [f"http://0.0.0.0:{c.metrics_port}"]
    shown = f"[{host.etcd_address}]" if ":" in host.etcd_address else host.etcd_address
    return [local, f"http://{shown}:{c.metrics_port}"]


def env_values(text: str) -> dict[str, str]:
    """KEY=value pairs of an env file as etcd-deploy writes them (unquoted values)."""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def env_without_initial(text: str) -> str:
    """`text` without its ETCD_INITIAL_* lines (they only matter at a member's first start)."""
    kept = [
        line
        for line in text.splitlines(keepends=True)
        if not line.lstrip().startswith("ETCD_INITIAL_")
    ]
    return "".join(kept)


def render_etcdctl_env(inv: Inventory, host: Host) -> str:
    """{config_dir}/etcdctl.env: etcdctl on the host talks to its local member over mTLS."""
    del host  # every host's file is the same today; the host stays in the contract
    c = inv.cluster
    pki = pki_paths(inv)
    lines = [_header(inv)]
    if c.etcd_version < V3_6:
        lines.append("ETCDCTL_API=3")  # 3.6 dropped the v2 etcdctl and this switch
    lines += [
        f"ETCDCTL_ENDPOINTS=https://127.0.0.1:{c.client_port}",
        f"ETCDCTL_CACERT={pki['ca.crt']}",
        f"ETCDCTL_CERT={pki['etcdctl-etcd-client.crt']}",
        f"ETCDCTL_KEY={pki['etcdctl-etcd-client.key']}",
        "ETCDCTL_DIAL_TIMEOUT=5s",
    ]
    return "\n".join(lines) + "\n"


def render_etcdctl_wrapper(inv: Inventory) -> str:
    """{install_dir}/etcdctl.sh: runs etcdctl with etcdctl.env exported."""
    _safe_path("cluster.config_dir", inv.cluster.config_dir)  # checked: written unquoted
    _safe_path("cluster.install_dir", inv.cluster.install_dir)
    return (
        "\n".join(
            [
                "#!/bin/sh",
                _header(inv),
                "set -a",
                f". {etcdctl_env_path(inv)}",
                "set +a",
                f'exec {install_path(inv, "etcdctl")} "$@"',
            ]
        )
        + "\n"
    )


def _hardening(rw_paths: list[str], *, home: str, caps: str) -> list[str]:
    """The systemd sandbox of every unit etcd-deploy writes (`systemd-analyze security`)."""
    return [
        "# Hardening",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={' '.join(rw_paths)}",
        "PrivateTmp=yes",
        f"ProtectHome={home}",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictSUIDSGID=yes",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures=native",
        f"CapabilityBoundingSet={caps}",
    ]


def render_unit(inv: Inventory) -> str:
    """/etc/systemd/system/etcd.service.

    The data dir must exist before the unit starts: ReadWritePaths= fails the start
    otherwise (`wal-dir` is refused by `rules.REFUSED_FLAGS`). TimeoutStartSec is long
    because a joining member with Type=notify only notifies once it has caught up with the
    cluster.
    """
    c = inv.cluster
    _safe_path("cluster.config_dir", c.config_dir)  # checked: written unquoted
    _safe_path("cluster.install_dir", c.install_dir)
    rw_paths = [_safe_path("cluster.data_dir", c.data_dir)]
    low_port = min(c.client_port, c.peer_port) < 1024
    caps = "CAP_NET_BIND_SERVICE" if low_port else ""
    lines = [
        _header(inv),
        "[Unit]",
        f"Description=etcd key-value store (cluster {c.name})",
        "Documentation=https://etcd.io/docs/",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "User=etcd",
        "Group=etcd",
        f"EnvironmentFile={env_path(inv)}",
        f"ExecStart={install_path(inv, 'etcd')}",
        "Restart=on-failure",
        "RestartSec=5s",
        "TimeoutStartSec=300",
        "LimitNOFILE=65536",
        "Nice=-10",
        "IOSchedulingClass=best-effort",
        "IOSchedulingPriority=2",
        *_hardening(rw_paths, home="yes", caps=caps),
    ]
    if caps:
        lines.append(f"AmbientCapabilities={caps}")
    lines += [
        "UMask=0077",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Scheduled backups on the hosts: a script, a oneshot service and its timer. The timer starts
# the service of the same name (e.g. etcd-backup.timer -> etcd-backup.service).

_EVERY_RE = re.compile(r"([0-9]+)(s|m|min|h|d)")
# Under PrivateTmp= a backup there would land in a private folder deleted after each run;
# the others are virtual or lost at reboot.
_VOLATILE_DIRS = ("/tmp", "/var/tmp", "/run", "/dev", "/proc", "/sys")
_HOME_DIRS = ("/home", "/root", "/run/user")


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _backup_folder(inv: Inventory, folder: str) -> str:
    """The backup folder as an absolute safe path, outside the etcd data dir."""
    path = _safe_path("--folder", folder)
    if path == "/":
        raise UsageError("--folder: backups need a folder of their own, not /")
    data_dir = _safe_path("cluster.data_dir", inv.cluster.data_dir)
    if _under(path, data_dir) or _under(data_dir, path):
        raise UsageError(
            f"--folder {path}: must be outside the etcd data dir {data_dir} (and not contain it)"
        )
    return path


def render_backup_script(inv: Inventory, host: Host, *, keep: int, folder: str) -> str:
    """The backup script on `host`: one snapshot of its local member, then pruning.

    POSIX sh using coreutils only. Snapshots go through `{install_dir}/etcdctl.sh` (which
    sets the endpoint and client certs) into `{folder}/{cluster}-{host}-<UTC time>.db` via a
    `.part` file; then all but the newest `keep` files of that host are deleted (the names
    sort by time). Prints the new file's path; etcdctl's own output goes to stderr.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise UsageError(f"--keep: expected a whole number of at least 1, got {keep!r}")
    path = _backup_folder(inv, folder)
    _safe_path("cluster.install_dir", inv.cluster.install_dir)  # checked: written unquoted
    # Cluster names are [a-z0-9-], host names [A-Za-z0-9._-]: nothing sh would expand.
    prefix = posixpath.join(path, f"{inv.cluster.name}-{host.name}-")
    stamp = "[0-9]" * 8 + "T" + "[0-9]" * 6 + ".*Z.db"
    lines = [
        "#!/bin/sh",
        _header(inv),
        f"# Snapshot of etcd member {host.name} into {path}, keeping the newest {keep}.",
        "# Prints the new file's path; etcdctl's own output goes to stderr.",
        "set -eu",
        "umask 077",
        "export LC_ALL=C",
        f"dir={path}",
        f"keep={keep}",
        "# Unquoted on purpose below: the path has no blanks, the rest is a glob.",
        f"pattern={prefix}{stamp}",
        'mkdir -p "$dir"',
        'chmod 0700 "$dir"',
        "# etcdctl writes NAME.part.part and renames it NAME.part, which we rename NAME.",
        "rm -f $pattern.part $pattern.part.part  # left by a killed run",
        f'f="{prefix}$(date -u +%Y%m%dT%H%M%S.%NZ).db"',
        'trap \'rm -f "$f.part" "$f.part.part"\' EXIT',
        "trap 'exit 1' HUP INT TERM",
        f'{wrapper_path(inv)} snapshot save "$f.part" >&2',
        'if [ ! -s "$f.part" ]; then',
        '\techo "etcd-backup: etcdctl wrote no snapshot to $f.part" >&2',
        "\texit 1",
        "fi",
        'mv "$f.part" "$f"',
        "set -- $pattern  # oldest first",
        '[ -e "$1" ] || set --',
        'while [ "$#" -gt "$keep" ]; do',
        '\trm -f -- "$1"',
        "\tshift",
        "done",
        'echo "$f"',
    ]
    return "\n".join(lines) + "\n"


def render_backup_service(inv: Inventory, script_path: str, folder: str) -> str:
    """The oneshot service running the backup script as root.

    Root because the etcdctl client key is readable by etcd only (0600 in a 0700 folder):
    root keeps CAP_DAC_READ_SEARCH/CAP_DAC_OVERRIDE for it and nothing else. The folder is
    created (unsandboxed, `+`) before the start: ReadWritePaths= needs it to exist. A
    folder in /tmp, /var/tmp, /run... is refused: PrivateTmp= or a reboot would lose it.
    """
    c = inv.cluster
    script = _safe_path("backup script path", script_path)
    path = _backup_folder(inv, folder)
    for volatile in _VOLATILE_DIRS:
        if _under(path, volatile):
            raise UsageError(f"--folder {path}: backups under {volatile} would be lost")
    home = "read-only" if any(_under(path, h) for h in _HOME_DIRS) else "yes"
    lines = [
        _header(inv),
        "[Unit]",
        f"Description=etcd snapshot backup (cluster {c.name})",
        "Documentation=https://etcd.io/docs/",
        f"After={UNIT}",
        # The folder must exist before the mount namespace is set up (ReadWritePaths):
        # `backup schedule` creates it; systemd cannot, even from a `+` ExecStartPre.
        f"ConditionPathIsDirectory={path}",
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart={script}",
        "TimeoutStartSec=1h",
        "Nice=10",
        "IOSchedulingClass=idle",
        *_hardening([path], home=home, caps="CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH"),
        "UMask=0077",
    ]
    return "\n".join(lines) + "\n"


def render_backup_timer(inv: Inventory, every: str) -> str:
    """The timer starting the backup service 1 min after activation, then every `every`.

    `every` is a systemd time span: a whole number and one of s, m, min, h, d ("30m", "6h").
    Monotonic timers only, so Persistent= does not apply.
    """
    m = _EVERY_RE.fullmatch(every) if isinstance(every, str) else None
    if m is None or int(m.group(1)) == 0:
        raise UsageError(
            f"--every: expected a time span like 30m, 1h or 6h (a whole number above 0 and "
            f"one of s, m, min, h, d), got {every!r}"
        )
    return (
        "\n".join(
            [
                _header(inv),
                "[Unit]",
                f"Description=etcd snapshot backup every {every} (cluster {inv.cluster.name})",
                "",
                "[Timer]",
                "OnActiveSec=1min",
                f"OnUnitActiveSec={every}",
                "RandomizedDelaySec=30s",
                "",
                "[Install]",
                "WantedBy=timers.target",
            ]
        )
        + "\n"
    )
