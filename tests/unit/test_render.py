"""Rendered host files: golden files byte for byte, plus the version/flag rules.

Regenerate the goldens after an intended change with:
    UPDATE_GOLDEN=1 pytest tests/unit/test_render.py
and review the diff.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.core.errors import UsageError
from orchestrator.core.inventory import Cluster, Host, Inventory, SSHSettings
from orchestrator.core.render import (
    HOST_CERT_KINDS,
    env_without_initial,
    pki_paths,
    render_etcd_env,
    render_etcdctl_env,
    render_etcdctl_wrapper,
    render_unit,
    resolve_flags,
)
from orchestrator.core.versions import parse_version

GOLDEN = Path(__file__).parent / "golden"
HEADER = "# Managed by etcd-deploy (cluster prod): changes are overwritten by the next run."


def check_golden(name: str, text: str) -> None:
    """Compare with tests/unit/golden/<name>; UPDATE_GOLDEN=1 rewrites it instead."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_bytes(text.encode())
    assert path.exists(), f"missing golden {path}: run with UPDATE_GOLDEN=1"
    assert text.encode() == path.read_bytes(), f"{name} differs (UPDATE_GOLDEN=1 to accept)"


def host(name: str, address: str) -> Host:
    return Host(name=name, address=address, etcd_address=address, ssh_port=22, ssh_user="root")


def make_inv(
    *hosts: Host, version: str = "3.5.17", flags: dict[str, str] | None = None, **cluster: object
) -> Inventory:
    c = Cluster(
        name="prod",
        etcd_version=parse_version(version),
        state_dir=Path("/tmp/unused-state"),
        flags=dict(flags or {}),
        **cluster,  # type: ignore[arg-type]
    )
    hosts = hosts or (host("etcd-1", "10.0.0.11"), host("etcd-2", "10.0.0.12"))
    return Inventory(path=Path("/srv/prod.toml"), cluster=c, ssh=SSHSettings(), hosts=hosts)


def env_for(
    inv: Inventory, h: Host | None = None, *, version: str | None = None, state: str = "new"
) -> str:
    h = h or inv.hosts[0]
    return render_etcd_env(
        inv,
        h,
        initial_cluster=[(x.name, inv.peer_url(x)) for x in inv.hosts],
        initial_state=state,
        token="prod-7f3a9c",
        version=parse_version(version) if version else inv.cluster.etcd_version,
    )


FLAGS_35 = {
    "quota-backend-bytes": "8589934592",
    "auto-compaction-mode": "periodic",
    "auto-compaction-retention": "1h",
    "heartbeat-interval": "100",
    "election-timeout": "1000",
    "experimental-initial-corrupt-check": "true",
    "listen-metrics-urls": "http://127.0.0.1:2381",
}
# What an operator keeps in [cluster.flags] across 3.5 -> 3.6 -> 3.7: experimental names
# (renamed, or turned into gates), a gate of their own, a corruption check turned off.
FLAGS_36 = {
    "quota-backend-bytes": "8589934592",
    "experimental-compaction-batch-limit": "1000",
    "experimental-warning-unary-request-duration": "300ms",
    "experimental-compact-hash-check-enabled": "false",
    "feature-gates": "StopGRPCServiceOnDefrag=true",
    "listen-metrics-urls": "http://127.0.0.1:2381",
}


# --------------------------------------------------------------------------- goldens


def test_golden_unit() -> None:
    check_golden("etcd.service", render_unit(make_inv()))


def test_golden_env_35_with_flags() -> None:
    inv = make_inv(
        host("etcd-1", "10.0.0.11"),
        host("etcd-2", "10.0.0.12"),
        host("etcd-3", "10.0.0.13"),
        flags=FLAGS_35,
    )
    check_golden("etcd-3.5.env", env_for(inv))


@pytest.mark.parametrize("version", ["3.6.14", "3.7.1"])
def test_golden_env_36_and_37(version: str) -> None:
    """The 3.5 flags above for 3.6 and 3.7: renamed, feature gates merged, no v2 switches."""
    inv = make_inv(
        host("etcd-1", "10.0.0.11"),
        host("etcd-2", "10.0.0.12"),
        host("etcd-3", "10.0.0.13"),
        flags=FLAGS_36,
    )
    check_golden(f"etcd-{version[:3]}.env", env_for(inv, version=version))


def test_golden_env_ipv6_34() -> None:
    inv = make_inv(host("etcd-a", "fd00::11"), host("etcd-b", "fd00::12"), version="3.4.35")
    check_golden("etcd-ipv6-3.4.env", env_for(inv, state="existing"))


def test_golden_etcdctl_env() -> None:
    inv = make_inv()
    check_golden("etcdctl.env", render_etcdctl_env(inv, inv.hosts[0]))


def test_golden_etcdctl_wrapper() -> None:
    check_golden("etcdctl.sh", render_etcdctl_wrapper(make_inv()))


def test_every_file_starts_with_the_managed_comment() -> None:
    inv = make_inv()
    for text in (render_unit(inv), env_for(inv), render_etcdctl_env(inv, inv.hosts[0])):
        assert text.splitlines()[0] == HEADER
        assert text.endswith("\n") and not text.endswith("\n\n")
    wrapper = render_etcdctl_wrapper(inv).splitlines()
    assert wrapper[:2] == ["#!/bin/sh", HEADER]


# --------------------------------------------------------------------------- etcd.env


def test_ipv6_urls_are_bracketed() -> None:
    inv = make_inv(host("etcd-a", "fd00::11"), host("etcd-b", "fd00::12"))
    lines = env_for(inv).splitlines()
    assert "ETCD_LISTEN_PEER_URLS=https://[fd00::11]:2380" in lines
    assert "ETCD_LISTEN_CLIENT_URLS=https://[fd00::11]:2379,https://127.0.0.1:2379" in lines
    assert "ETCD_ADVERTISE_CLIENT_URLS=https://[fd00::11]:2379" in lines
    assert "ETCD_INITIAL_ADVERTISE_PEER_URLS=https://[fd00::11]:2380" in lines
    assert (
        "ETCD_INITIAL_CLUSTER=etcd-a=https://[fd00::11]:2380,etcd-b=https://[fd00::12]:2380"
        in lines
    )


def test_dns_etcd_address_listens_on_all_ipv4() -> None:
    inv = make_inv(host("etcd-1", "etcd-1.example.com"))
    lines = env_for(inv).splitlines()
    assert "ETCD_LISTEN_PEER_URLS=https://0.0.0.0:2380" in lines
    assert "ETCD_LISTEN_CLIENT_URLS=https://0.0.0.0:2379" in lines
    assert "ETCD_ADVERTISE_CLIENT_URLS=https://etcd-1.example.com:2379" in lines


def test_loopback_address_is_not_listened_twice() -> None:
    inv = make_inv(host("solo", "127.0.0.1"))
    assert "ETCD_LISTEN_CLIENT_URLS=https://127.0.0.1:2379\n" in env_for(inv)


def test_custom_ports_and_dirs() -> None:
    inv = make_inv(
        client_port=12379, peer_port=12380, config_dir="/srv/etcd/conf", data_dir="/data/etcd"
    )
    text = env_for(inv)
    assert "ETCD_LISTEN_CLIENT_URLS=https://10.0.0.11:12379,https://127.0.0.1:12379\n" in text
    assert "ETCD_DATA_DIR=/data/etcd\n" in text
    assert "ETCD_CERT_FILE=/srv/etcd/conf/pki/server.crt\n" in text


def test_version_specific_lines() -> None:
    inv = make_inv()
    text34 = env_for(inv, version="3.4.35")
    assert "ETCD_LOGGER=zap\n" in text34 and "ETCD_ENABLE_V2=false\n" in text34
    for version in ("3.5.17", "3.6.1"):
        text = env_for(inv, version=version)
        assert "ETCD_LOGGER" not in text and "ETCD_ENABLE_V2" not in text
    user = make_inv(flags={"logger": "zap", "enable-v2": "true"})
    text = env_for(user, version="3.4.35")
    assert text.count("ETCD_ENABLE_V2=") == 1 and "ETCD_ENABLE_V2=true\n" in text
    assert text.count("ETCD_LOGGER=") == 1


def test_env_without_initial() -> None:
    inv = make_inv(host("etcd-1", "10.0.0.11"), host("etcd-2", "10.0.0.12"))
    first = env_for(inv, state="new")
    later = render_etcd_env(
        inv,
        inv.hosts[0],
        initial_cluster=[("etcd-1", inv.peer_url(inv.hosts[0]))],
        initial_state="existing",
        token="other-token",
        version=parse_version("3.5.17"),
    )
    assert first != later
    assert env_without_initial(first) == env_without_initial(later)
    stripped = env_without_initial(first)
    assert "ETCD_INITIAL_" not in stripped
    assert stripped.startswith(HEADER + "\n") and "ETCD_NAME=etcd-1\n" in stripped
    changed = env_for(make_inv(*inv.hosts, flags={"quota-backend-bytes": "1"}))
    assert env_without_initial(changed) != stripped
    assert env_without_initial("") == ""


def test_env_argument_checks() -> None:
    inv = make_inv()
    with pytest.raises(ValueError, match="initial_state"):
        env_for(inv, state="joining")
    with pytest.raises(ValueError, match="does not list etcd-1"):
        render_etcd_env(
            inv,
            inv.hosts[0],
            initial_cluster=[("etcd-2", "https://10.0.0.12:2380")],
            initial_state="new",
            token="t",
            version=parse_version("3.5.17"),
        )


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    "flag",
    [
        "data-dir",
        "initial-cluster",
        "cert-file",
        "config-file",
        "force-new-cluster",
        "--name",
        "Peer_Key_File",
    ],
)
def test_managed_flags_are_refused(flag: str) -> None:
    inv = make_inv(flags={flag: "x"})
    with pytest.raises(
        UsageError, match=rf"cluster\.flags\.{flag}: --\S+ is (managed|refused) by etcd-deploy"
    ):
        env_for(inv)


@pytest.mark.parametrize("value", ["a\nETCD_NAME=evil", "a\\b", '"quoted"', " padded"])
def test_unsafe_values_are_refused(value: str) -> None:
    with pytest.raises(UsageError, match=r"cluster\.flags\.log-level"):
        env_for(make_inv(flags={"log-level": value}))


def test_flags_sorted_and_named() -> None:
    text = env_for(
        make_inv(
            flags={
                "snapshot-count": "10000",
                "auto-compaction-retention": "1h",
                "log-rotation-config-json": '{"maxsize": 100}',
            }
        )
    )
    tail = text.split("# etcd-deploy's defaults and [cluster.flags]\n", 1)[1]
    assert tail == (
        "ETCD_AUTO_COMPACTION_RETENTION=1h\n"
        "ETCD_EXPERIMENTAL_COMPACT_HASH_CHECK_ENABLED=true\n"
        "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK=true\n"
        "ETCD_LISTEN_METRICS_URLS=http://127.0.0.1:2381\n"
        'ETCD_LOG_ROTATION_CONFIG_JSON={"maxsize": 100}\n'
        "ETCD_SNAPSHOT_COUNT=10000\n"
    )


def test_36_renames_and_feature_gates() -> None:
    flags = {
        "experimental-compaction-batch-limit": "1000",
        "experimental-initial-corrupt-check": "true",
        "feature-gates": "StopGRPCServiceOnDefrag=true",
        "quota-backend-bytes": "8589934592",
    }
    gates = "CompactHashCheck=true,InitialCorruptCheck=true,StopGRPCServiceOnDefrag=true"
    assert resolve_flags(flags, parse_version("3.6.1")) == [
        ("compaction-batch-limit", "1000"),
        ("feature-gates", gates),
        ("quota-backend-bytes", "8589934592"),
    ]
    lines = env_for(make_inv(flags=flags), version="3.6.1").splitlines()
    assert "ETCD_COMPACTION_BATCH_LIMIT=1000" in lines
    assert f"ETCD_FEATURE_GATES={gates}" in lines
    assert not [line for line in lines if line.startswith("ETCD_EXPERIMENTAL_")]


def test_the_unary_request_warning_is_renamed_for_36_too() -> None:
    """Deprecated in 3.6 (outside its migration map), gone in 3.7: its new name from 3.6 on."""
    flags = {"experimental-warning-unary-request-duration": "300ms"}
    assert ("warning-unary-request-duration", "300ms") in resolve_flags(
        flags, parse_version("3.6.4")
    )
    assert ("experimental-warning-unary-request-duration", "300ms") in resolve_flags(
        flags, parse_version("3.5.30")
    )
    assert ("warning-unary-request-duration", "300ms") in resolve_flags(
        flags, parse_version("3.7.1")
    )


def test_new_names_spelled_experimental_before_36() -> None:
    flags = {"compaction-batch-limit": "1000", "experimental-initial-corrupt-check": "false"}
    assert resolve_flags(flags, parse_version("3.5.17")) == [
        ("experimental-compact-hash-check-enabled", "true"),
        ("experimental-compaction-batch-limit", "1000"),
        ("experimental-initial-corrupt-check", "false"),
    ]
    with pytest.raises(UsageError, match=r"cluster\.flags\.feature-gates.*3\.6"):
        resolve_flags({"feature-gates": "InitialCorruptCheck=true"}, parse_version("3.5.17"))


@pytest.mark.parametrize(
    "flag", ["enable-v2", "experimental-enable-v2v3", "proxy", "proxy-refresh-interval"]
)
def test_flags_removed_in_36(flag: str) -> None:
    inv = make_inv(flags={flag: "true"})
    env_for(inv, version="3.5.17")  # fine before 3.6
    with pytest.raises(
        UsageError,
        match=rf"cluster\.flags\.{flag}: .*removed in etcd 3\.6 \(target 3\.6\.0\): "
        r".*remove the key",
    ):
        env_for(inv, version="3.6.0")
    with pytest.raises(UsageError, match=r"removed in etcd 3\.6 \(target 3\.7\.1\)"):
        env_for(inv, version="3.7.1")


def test_flags_removed_in_37() -> None:
    inv = make_inv(flags={"discovery-proxy": "http://192.0.2.1:8080"})
    env_for(inv, version="3.6.14")  # fine before 3.7
    with pytest.raises(
        UsageError,
        match=r"cluster\.flags\.discovery-proxy: --discovery-proxy was removed in etcd 3\.7 "
        r"\(target 3\.7\.0\): v2 discovery is gone",
    ):
        env_for(inv, version="3.7.0")


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (
            "3.4.23",
            [
                ("enable-v2", "false"),
                ("experimental-initial-corrupt-check", "true"),
                ("logger", "zap"),
            ],
        ),
        ("3.5.0", [("experimental-initial-corrupt-check", "true")]),
        ("3.5.4", [("experimental-initial-corrupt-check", "true")]),
        (
            "3.5.5",
            [
                ("experimental-compact-hash-check-enabled", "true"),
                ("experimental-initial-corrupt-check", "true"),
            ],
        ),
        (
            "3.5.30",
            [
                ("experimental-compact-hash-check-enabled", "true"),
                ("experimental-initial-corrupt-check", "true"),
            ],
        ),
        ("3.6.0", [("feature-gates", "CompactHashCheck=true,InitialCorruptCheck=true")]),
        ("3.7.1", [("feature-gates", "CompactHashCheck=true,InitialCorruptCheck=true")]),
    ],
)
def test_corruption_checks_are_on_by_default(version: str, expected: list[tuple[str, str]]) -> None:
    """Spelled as each version knows them: compact-hash checks exist from 3.5.5 on, and
    from 3.6 on both are feature gates (etcd leaves both off by default)."""
    assert resolve_flags({}, parse_version(version)) == expected


@pytest.mark.parametrize(
    ("flags", "version", "expected"),
    [
        (
            {"experimental-initial-corrupt-check": False},
            "3.5.30",
            [
                ("experimental-compact-hash-check-enabled", "true"),
                ("experimental-initial-corrupt-check", "false"),
            ],
        ),
        (
            {"experimental_compact_hash_check_enabled": "false"},
            "3.5.30",
            [
                ("experimental-compact-hash-check-enabled", "false"),
                ("experimental-initial-corrupt-check", "true"),
            ],
        ),
        (
            {"feature-gates": "InitialCorruptCheck=false"},
            "3.6.14",
            [("feature-gates", "CompactHashCheck=true,InitialCorruptCheck=false")],
        ),
        (
            {"experimental-compact-hash-check-enabled": False},
            "3.6.14",
            [("feature-gates", "CompactHashCheck=false,InitialCorruptCheck=true")],
        ),
        (
            {"experimental-compact-hash-check-enabled": False, "logger": "capnslog"},
            "3.4.23",
            [
                ("enable-v2", "false"),
                ("experimental-compact-hash-check-enabled", "false"),
                ("experimental-initial-corrupt-check", "true"),
                ("logger", "capnslog"),
            ],
        ),
    ],
)
def test_a_key_in_cluster_flags_overrides_a_default(
    flags: dict[str, object], version: str, expected: list[tuple[str, str]]
) -> None:
    assert resolve_flags(flags, parse_version(version)) == expected


def test_same_flag_twice_is_refused() -> None:
    flags = {"experimental-compaction-batch-limit": "1", "compaction-batch-limit": "2"}
    with pytest.raises(UsageError, match="both set etcd flag --compaction-batch-limit"):
        resolve_flags(flags, parse_version("3.6.0"))
    gates = {
        "experimental-initial-corrupt-check": "true",
        "feature-gates": "InitialCorruptCheck=false",
    }
    with pytest.raises(UsageError, match="InitialCorruptCheck"):
        resolve_flags(gates, parse_version("3.6.0"))


def test_bool_flag_values() -> None:
    resolved = resolve_flags({"enable-pprof": True}, parse_version("3.5.17"))  # type: ignore[dict-item]
    assert ("enable-pprof", "true") in resolved


# --------------------------------------------------------------------------- other files


def test_unit_low_ports_and_wal_dir() -> None:
    text = render_unit(make_inv(client_port=379, peer_port=380))
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n" in text
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE\n" in text
    assert "ReadWritePaths=/var/lib/etcd\n" in text
    with pytest.raises(UsageError, match=r"--wal-dir is refused .* put cluster\.data_dir"):
        resolve_flags({"wal-dir": "/wal/etcd"}, parse_version("3.5.17"))
    assert "CapabilityBoundingSet=\n" in render_unit(make_inv())


def test_unsafe_paths_are_refused() -> None:
    bad = make_inv()
    bad = replace(bad, cluster=replace(bad.cluster, install_dir="/opt/my bin"))
    with pytest.raises(UsageError, match=r"cluster\.install_dir"):
        render_unit(bad)


def test_etcdctl_env_36_drops_api_switch() -> None:
    inv = make_inv(version="3.6.1")
    text = render_etcdctl_env(inv, inv.hosts[0])
    assert "ETCDCTL_API" not in text
    assert "ETCDCTL_CERT=/etc/etcd/pki/etcdctl-etcd-client.crt\n" in text


def test_pki_paths() -> None:
    paths = pki_paths(make_inv(config_dir="/srv/etcd"))
    assert paths["ca.crt"] == "/srv/etcd/pki/ca.crt"
    for kind in HOST_CERT_KINDS:
        assert paths[f"{kind}.crt"] == f"/srv/etcd/pki/{kind}.crt"
        assert paths[f"{kind}.key"] == f"/srv/etcd/pki/{kind}.key"
    assert len(paths) == 1 + 2 * len(HOST_CERT_KINDS)


@pytest.mark.parametrize(
    ("metrics", "address", "expected"),
    [
        ("local", "10.0.0.11", "http://127.0.0.1:2381"),
        ("host", "10.0.0.11", "http://127.0.0.1:2381,http://10.0.0.11:2381"),
        ("host", "fd00::11", "http://127.0.0.1:2381,http://[fd00::11]:2381"),
        ("host", "etcd-1.example.com", "http://0.0.0.0:2381"),
        ("off", "10.0.0.11", None),
    ],
)
def test_metrics_urls(metrics: str, address: str, expected: str | None) -> None:
    """Metrics on by default, on this host only; "host" adds the member's address for a
    scraper; [cluster.flags] listen-metrics-urls wins (golden etcd-3.5.env)."""
    inv = make_inv(host("etcd-1", address), metrics=metrics)
    lines = [line for line in env_for(inv).splitlines() if "METRICS" in line]
    assert lines == ([f"ETCD_LISTEN_METRICS_URLS={expected}"] if expected else [])
    own = make_inv(
        host("etcd-1", address),
        metrics=metrics,
        flags={"listen-metrics-urls": "http://127.0.0.1:9999"},
    )
    assert [line for line in env_for(own).splitlines() if "METRICS" in line] == [
        "ETCD_LISTEN_METRICS_URLS=http://127.0.0.1:9999"
    ]
