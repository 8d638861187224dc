"""What a host has now, read in one SSH command: a pure script builder and a pure parser.

The same command also tries to take the run lock (see `host_lock.py`), so a no-op run costs
one round trip per host to learn everything and one to let go of the lock.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestrator.core.etcd_unit import SHOW_FACTS
from orchestrator.core.host_lock import acquire_script
from orchestrator.core.host_paths import pki_dir
from orchestrator.core.inventory import Inventory
from orchestrator.core.ownership import MARKER_NAME, DirFacts, ignored_entry

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
    links: set[str] = field(default_factory=set)  # wanted paths that are symlinks (never read)
    folders: dict[str, DirFacts] = field(default_factory=dict)  # data and config dir: whose?
    lock: str = ""  # "acquired", or `held ...` and somebody else's lock (host_lock.parse_held)
    lock_acquired: bool = False

    def forget(self, folder: str) -> None:
        """Plan as if `folder` were gone (it is moved aside before the install)."""
        inside = folder.rstrip("/") + "/"
        self.dirs = {p: v for p, v in self.dirs.items() if p != folder and not p.startswith(inside)}
        self.files = {p: v for p, v in self.files.items() if not p.startswith(inside)}
        self.texts = {p: v for p, v in self.texts.items() if not p.startswith(inside)}
        self.links = {p for p in self.links if not p.startswith(inside)}
        self.folders.pop(folder, None)

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
        f"echo {q(f'{MARK} text {p}')}; [ -L {q(p)} ] || cat {q(p)} 2>/dev/null; echo; "
        for p in text_paths
    )
    folders = "".join(_folder_lines(d) for d in (c.data_dir, c.config_dir))
    dirs = " ".join(q(d) for d in (c.install_dir, c.config_dir, pki_dir(inv), c.data_dir))
    return (
        "set +e; export LC_ALL=C\n"
        f'echo "{MARK} lock"; {acquire_script(lock_content, lock_path)}\n'
        f'echo "{MARK} arch"; uname -m\n'
        f'echo "{MARK} version"; {q(c.install_dir)}/etcd --version 2>/dev/null | head -n 1\n'
        f'echo "{MARK} user"; id -u etcd 2>/dev/null\n'
        f'echo "{MARK} dirs"; stat -c "%a %U %G %n" {dirs} 2>/dev/null\n'
        f'echo "{MARK} service"; {SHOW_FACTS} 2>/dev/null\n'
        f'echo "{MARK} data"; test -d {q(c.data_dir)}/member && echo yes\n'
        f'echo "{MARK} files"; for f in {files}; do if [ -L "$f" ]; then echo "link $f"; '
        'elif [ -f "$f" ]; then '
        'echo "$(sha256sum "$f" | cut -d" " -f1) $(stat -c "%a %U %G" "$f") $f"; fi; done\n'
        f"{folders}"
        f"{texts}\n"
        "exit 0\n"
    )


def _folder_lines(path: str) -> str:
    """Whose is this folder: exists, mount point, our marker (never through a symlink),
    and its entries (the first 50)."""
    q = shlex.quote
    d, m = q(path), q(f"{path}/{MARKER_NAME}")
    return (
        f"echo {q(f'{MARK} folder {path}')}; "
        f'[ -L {d} ] && echo "link $(readlink {d} | head -c 300)"; '
        f"if [ -d {d} ]; then echo exists; "
        f"mountpoint -q {d} && echo mount; "
        f'if [ -f {m} ] && [ ! -L {m} ]; then echo "marker $(head -c 200 {m} | tr "\\n" " ")"; '
        f"fi; ls -A1 {d} 2>/dev/null | head -n 50 | sed 's/^/entry /'; fi\n"
    )


def parse_folder(lines: list[str]) -> DirFacts:
    """One `_folder_lines` section (pure)."""
    links = [row[len("link ") :] for row in lines if row.startswith("link ")]
    if "exists" not in lines:
        return DirFacts(link=links[0] if links else "")
    markers = [row[len("marker ") :] for row in lines if row.startswith("marker ")]
    entries = tuple(
        name
        for row in lines
        if row.startswith("entry ") and not ignored_entry(name := row[len("entry ") :])
    )
    return DirFacts(
        True, markers[0] if markers else None, entries, "mount" in lines, links[0] if links else ""
    )


_VERSION = re.compile(r"etcd Version:\s*(\S+)")


def parse_facts(text: str) -> HostFacts:
    """Parse `facts_script` output (pure)."""
    facts = HostFacts()
    for name, lines in _sections(text):
        _read_section(facts, name, lines)
    return facts


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """The output cut at each mark: the mark's name and the lines up to the next one."""
    sections: list[tuple[str, list[str]]] = []
    lines_in = text.split("\n")
    if lines_in and lines_in[-1] == "":
        lines_in.pop()  # the output's final newline
    for line in lines_in:
        if line.startswith(MARK + " "):
            sections.append((line[len(MARK) + 1 :], []))
        elif sections:
            sections[-1][1].append(line)
    return sections


def _read_section(facts: HostFacts, name: str, lines: list[str]) -> None:
    """Fill `facts` from one section (sections come in the script's order: `files` before
    the `text` ones that need it)."""
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
        _read_dirs(facts, lines)
    elif name == "service":
        _read_service(facts, lines)
    elif name == "data":
        facts.has_data = body == "yes"
    elif name == "files":
        _read_files(facts, lines)
    elif name.startswith("folder "):
        facts.folders[name[len("folder ") :]] = parse_folder(lines)
    elif name.startswith("text "):
        path = name[5:]
        if path in facts.files:
            # `cat` then `echo`: the echo's newline is the line break before the next mark.
            facts.texts[path] = "\n".join(lines)


def _read_dirs(facts: HostFacts, lines: list[str]) -> None:
    for row in lines:
        parts = row.split(maxsplit=3)
        if len(parts) == 4:
            facts.dirs[parts[3]] = (int(parts[0], 8), parts[1], parts[2])


def _read_service(facts: HostFacts, lines: list[str]) -> None:
    props = dict(row.split("=", 1) for row in lines if "=" in row)
    if props.get("LoadState") == "loaded":
        facts.active_state = props.get("ActiveState", "")
        facts.unit_file_state = props.get("UnitFileState", "")
        facts.active_since = props.get("ActiveEnterTimestamp", "")


def _read_files(facts: HostFacts, lines: list[str]) -> None:
    for row in lines:
        if row.startswith("link "):
            facts.links.add(row[len("link ") :])
            continue
        parts = row.split(maxsplit=4)
        if len(parts) == 5:
            sha, mode, owner, group, path = parts
            facts.files[path] = RemoteFile(sha, int(mode, 8), owner, group)
