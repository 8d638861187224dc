"""The v2 store before an upgrade from 3.5 to 3.6 (pure).

etcd 3.6 has no v2 store: at its first start it refuses a data dir whose v2 store holds
anything but membership ("detected disallowed custom content in v2store"). Upstream's 3.6
upgrade guide ("V2 Store", https://etcd.io/docs/v3.6/upgrades/upgrade_3_6/) asks to run
`etcdutl check v2store` first. That command is 3.5's own etcdutl (3.5.18+; 3.5.32+ also
scans the WAL after the last snapshot), which every member has once it runs the minimum
source patch (`versions.MIN_SOURCE_PATCH`). It reads the WAL and the newest `.snap` read-only
and never opens the bbolt db, so it runs beside the live member without stopping it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from orchestrator.core.host_paths import install_path
from orchestrator.core.inventory import Inventory
from orchestrator.core.versions import Version, parse_version

CLEAN_MARK = "No custom content found"
CUSTOM_MARK = re.compile(r"detected custom (v2 )?content")
WORKAROUND = (
    "upstream's workaround (https://etcd.io/docs/v3.6/upgrades/upgrade_3_6/#v2-store): "
    "migrate the v2 data you still need, set snapshot-count = 1 in [cluster.flags] and run "
    "`etcd-deploy up` (each member's next snapshot leaves the v2 data out), then remove "
    "the key, run `etcd-deploy up` again and retry the upgrade"
)


def needs_check(current_versions: Iterable[str], target: str) -> bool:
    """Whether a member leaves 3.5 for 3.6 in this upgrade."""
    tgt = parse_version(target)
    return tgt.minor_line == (3, 6) and any(
        parse_version(v).minor_line == (3, 5) for v in current_versions
    )


def check_script(inv: Inventory) -> str:
    """The check on a host, with the host's own (3.5) etcdutl and the member's data dir."""
    etcdutl = shlex.quote(install_path(inv, "etcdutl"))
    data_dir = shlex.quote(inv.cluster.data_dir)
    return f"{etcdutl} check v2store --data-dir {data_dir} 2>&1"


def problem(host: str, exit_code: int, output: str, target: Version | str) -> str | None:
    """Why `host`'s member may not move to `target`, from the check's exit code and output
    (stdout and stderr together), or None when its v2 store holds membership only."""
    text = " ".join(output.split())[-400:]
    if exit_code == 0 and CLEAN_MARK in output:
        return None
    if CUSTOM_MARK.search(output):
        return (
            f"{host}: its v2 store holds data other than membership ({text}); etcd {target} "
            f"would refuse to start on it: {WORKAROUND}"
        )
    return (
        f"{host}: `etcdutl check v2store` could not tell whether the v2 store holds custom "
        f"data (exit {exit_code}: {text or 'no output'}); upgrade every member to 3.5.32 or "
        "later first, whose etcdutl has the check"
    )
