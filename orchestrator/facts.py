"""What a host has now, read in one SSH command: a pure script builder and a pure parser.

The same command also tries to take the run lock (see `lock.py`), so a no-op run costs
one round trip per host to learn everything and one to let go of the lock.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestrator.inventory import Inventory

MARK = "@@etcd-deploy@@"
# File kinds whose text the facts carry, so `plan` can show a diff and a run can tell whose
# CA a host trusts (never keys).
TEXT_KINDS = ("unit", "env", "etcdctl-env", "wrapper", "ca")


@dataclass(frozen=True)
class RemoteFile:
    sha256: str
    mode: int
    owner: str
    group: str


@dataclass
class HostFacts:
    arch: str = ""
    etcd_version: str | None = None  # installed binary's version, None when absent
    etcd_user: bool = False
    dirs: dict[str, tuple[int, str, str]] = field(
        default_factory=dict
    )  # path -> (mode, owner, group)
    active_state: str = ""  # systemd ActiveState of etcd.service ("" when no unit)
    unit_file_state: str = ""
    active_since: str = ""  # ActiveEnterTimestamp
    has_data: bool = False  # {data_dir}/member exists
    files: dict[str, RemoteFile] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # path -> content (non-secret files)
    lock: str = ""  # "acquired" or the content of somebody else's lock
    lock_acquired: bool = False

    @property
    def running(self) -> bool:
        return self.active_state in ("active", "activating", "reloading")

    @property
    def holds_cluster(self) -> bool:
        """Data in the data dir, or etcd running: something a change could break."""
        return self.has_data or self.running


def facts_script(
    inv: Inventory,
    paths: Iterable[str],
    text_paths: Iterable[str],
    lock_path: str,
    lock_content: str,
) -> str:
    """The one command that reads a host's facts (and tries to take the run lock)."""
    c = inv.cluster
    q = shlex.quote
    files = " ".join(q(p) for p in paths)
    texts = "".join(
        f"echo {q(f'{MARK} text {p}')}; cat {q(p)} 2>/dev/null; echo; " for p in text_paths
    )
    dirs = " ".join(q(d) for d in (c.install_dir, c.config_dir, f"{c.config_dir}/pki", c.data_dir))
    return (
        "set +e; export LC_ALL=C\n"
        f'echo "{MARK} lock"; '
        f"if ( set -C; printf '%s\\n' {q(lock_content)} > {q(lock_path)} ) 2>/dev/null; "
        f"then echo acquired; else cat {q(lock_path)}; fi\n"
        f'echo "{MARK} arch"; uname -m\n'
        f'echo "{MARK} version"; {q(c.install_dir)}/etcd --version 2>/dev/null | head -n 1\n'
        f'echo "{MARK} user"; id -u etcd 2>/dev/null\n'
        f'echo "{MARK} dirs"; stat -c "%a %U %G %n" {dirs} 2>/dev/null\n'
        f'echo "{MARK} service"; systemctl show etcd.service -p LoadState -p ActiveState '
        "-p UnitFileState -p ActiveEnterTimestamp 2>/dev/null\n"
        f'echo "{MARK} data"; test -d {q(c.data_dir)}/member && echo yes\n'
        f'echo "{MARK} files"; for f in {files}; do test -f "$f" && '
        'echo "$(sha256sum "$f" | cut -d" " -f1) $(stat -c "%a %U %G" "$f") $f"; done\n'
        f"{texts}\n"
        "exit 0\n"
    )


_VERSION = re.compile(r"etcd Version:\s*(\S+)")


def parse_facts(text: str) -> HostFacts:
    """Parse `facts_script` output (pure)."""
    facts = HostFacts()
    sections: list[tuple[str, list[str]]] = []
    lines_in = text.split("\n")
    if lines_in and lines_in[-1] == "":
        lines_in.pop()  # the output's final newline
    for line in lines_in:
        if line.startswith(MARK + " "):
            sections.append((line[len(MARK) + 1 :], []))
        elif sections:
            sections[-1][1].append(line)
    for name, lines in sections:
        body = "\n".join(lines).strip()
        if name == "lock":
            facts.lock_acquired = body == "acquired"
            facts.lock = body
        elif name == "arch":
            facts.arch = body
        elif name == "version":
            match = _VERSION.search(body)
            facts.etcd_version = match.group(1) if match else None
        elif name == "user":
            facts.etcd_user = body.isdigit()
        elif name == "dirs":
            for row in lines:
                parts = row.split(maxsplit=3)
                if len(parts) == 4:
                    facts.dirs[parts[3]] = (int(parts[0], 8), parts[1], parts[2])
        elif name == "service":
            props = dict(row.split("=", 1) for row in lines if "=" in row)
            if props.get("LoadState") == "loaded":
                facts.active_state = props.get("ActiveState", "")
                facts.unit_file_state = props.get("UnitFileState", "")
                facts.active_since = props.get("ActiveEnterTimestamp", "")
        elif name == "data":
            facts.has_data = body == "yes"
        elif name == "files":
            for row in lines:
                parts = row.split(maxsplit=4)
                if len(parts) == 5:
                    sha, mode, owner, group, path = parts
                    facts.files[path] = RemoteFile(sha, int(mode, 8), owner, group)
        elif name.startswith("text "):
            path = name[5:]
            if path in facts.files:
                # `cat` then `echo`: the echo's newline is the line break before the next mark.
                facts.texts[path] = "\n".join(lines)
    return facts
