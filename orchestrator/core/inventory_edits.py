"""Comment-keeping edits of the inventory, as pure text: the file's text in, the edited text
out (tomlkit keeps every comment and the layout; the file's byte order mark and CRLF line
ends are kept too). Reading, validating and writing the file is
`orchestrator.adapters.inventory_file`'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import ParseError
from tomlkit.items import AoT, Comment, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from orchestrator.core.errors import InventoryError, UsageError
from orchestrator.core.inventory_rules import BOM, TOO_DEEP
from orchestrator.core.rules import Version


def with_host_added(
    text: str, path: Path, name: str, address: str, etcd_address: str | None = None
) -> str:
    """`text` with a [[hosts]] entry appended after the last one."""
    doc = parse_document(text, path)
    entry = tomlkit.table()
    entry.add("name", name)
    entry.add("address", address)
    if etcd_address is not None:
        entry.add("etcd_address", etcd_address)
    if "hosts" not in doc:
        doc.append("hosts", tomlkit.aot())
    hosts = _hosts_aot(doc, path)
    if hosts.body:
        tail = _tail_container(hosts.body[-1])
        if tail is not None and tail.body and not isinstance(tail.body[-1][1], Whitespace):
            tail.body.append((None, tomlkit.ws("\n")))
    hosts.append(entry)
    return _same_style(tomlkit.dumps(doc), text)


def with_host_removed(text: str, path: Path, name: str) -> str:
    """`text` without the [[hosts]] entry `name` and the comment block right above it;
    UsageError naming `path` when there is no such host."""
    doc = parse_document(text, path)
    hosts = _hosts_aot(doc, path) if "hosts" in doc else tomlkit.aot()
    tables = hosts.body
    names = [t.get("name") for t in tables]
    if name not in names:
        known = ", ".join(str(n) for n in names)
        raise UsageError(f"{path}: no host named {name!r} (hosts: {known})")
    index = names.index(name)
    previous = tables[index - 1] if index > 0 else _item_before(doc, "hosts")
    _move_comments_on_removal(
        _tail_container(previous), tables[index].value, last=index == len(tables) - 1
    )
    del hosts[index]
    return _same_style(tomlkit.dumps(doc), text)


def with_cluster_key(text: str, path: Path, key: str, value: Any) -> str:
    """`text` with cluster.<key> set (e.g. etcd_version), keeping its comment. A path or a
    version is written as a plain string."""
    doc = parse_document(text, path)
    cluster = doc.get("cluster")
    if cluster is None:
        raise InventoryError(path, "cluster", "missing the [cluster] table")
    if isinstance(value, Path | Version):
        value = str(value)
    if key in cluster or not isinstance(cluster, Table):
        cluster[key] = value
    else:
        _insert_after_last_value(cluster, key, value)
    return _same_style(tomlkit.dumps(doc), text)


def parse_document(text: str, path: Path) -> TOMLDocument:
    """`text` as a tomlkit document; InventoryError naming `path` on a syntax error."""
    try:
        return tomlkit.parse(text.removeprefix(BOM))
    except ParseError as exc:
        raise InventoryError(path, "", f"TOML syntax error: {exc}") from None
    except RecursionError:
        raise InventoryError(path, "", TOO_DEEP) from None


def _hosts_aot(doc: TOMLDocument, path: Path) -> AoT:
    """The [[hosts]] array of tables (an inline `hosts = [...]` cannot be edited)."""
    hosts = doc["hosts"]
    if not isinstance(hosts, AoT):
        raise InventoryError(
            path, "hosts", "to be edited by etcd-deploy, write each host as a [[hosts]] table"
        )
    return hosts


def _same_style(text: str, original: str) -> str:
    """`text` with the BOM and the line ends (CRLF or LF) of `original`."""
    if "\r\n" in original:
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    if original.startswith(BOM) and not text.startswith(BOM):
        text = BOM + text
    return text


def _item_before(doc: TOMLDocument, key: str) -> Any:
    """The top-level item just before `key` in the document (None if first)."""
    previous = None
    for item_key, item in doc.body:
        if item_key is not None and item_key.key == key:
            return previous
        previous = item
    return None


def _tail_container(item: Any) -> Container | None:
    """The container whose body ends right before the next table header.

    tomlkit stores comments above a `[[hosts]]` header at the end of the previous table
    (or of that table's last sub-table).
    """
    while True:
        if isinstance(item, AoT):
            item = item.body[-1] if item.body else None
        if not isinstance(item, Table):
            return None
        body = item.value.body
        last = body[-1][1] if body else None
        if isinstance(last, Table | AoT):
            item = last
            continue
        return item.value


def _trailing_trivia(body: list[tuple[Any, Any]]) -> int:
    """Index where the trailing run of comments/blank lines of `body` starts."""
    start = len(body)
    while start > 0 and isinstance(body[start - 1][1], Comment | Whitespace):
        start -= 1
    return start


def _header_block_start(body: list[tuple[Any, Any]]) -> int:
    """Index where the comments directly above the next header (no blank line) start."""
    start = len(body)
    while start > 0 and isinstance(body[start - 1][1], Comment):
        start -= 1
    return start


def _move_comments_on_removal(previous: Container | None, removed: Container, last: bool) -> None:
    """Drop the removed host's header comments; keep the next host's (or the file's end).

    Comments directly above a header (no blank line) belong to that header's host.
    """
    if previous is None:
        return
    tail = removed.body[_trailing_trivia(removed.body) :]
    blanks = [i for i, (_, item) in enumerate(tail) if isinstance(item, Whitespace)]
    if last:
        keep = tail[blanks[0] :] if blanks else []
    else:
        keep = tail[blanks[-1] :] if blanks else tail[_header_block_start(tail) :]
    del previous.body[_header_block_start(previous.body) :]
    if keep and previous.body and isinstance(previous.body[-1][1], Whitespace):
        if isinstance(keep[0][1], Whitespace):
            keep = keep[1:]
    elif keep and not isinstance(keep[0][1], Whitespace):
        keep = [(None, tomlkit.ws("\n")), *keep]
    if not keep and last:
        while previous.body and isinstance(previous.body[-1][1], Whitespace):
            previous.body.pop()
    previous.body.extend(keep)


def _insert_after_last_value(table: Table, key: str, value: Any) -> None:
    """Add key = value after the table's last key/value (before comments and sub-tables)."""
    container = table.value
    last = None  # index in the body of the last plain value (sub-tables come after)
    for index, (item_key, item) in enumerate(container.body):
        if item_key is not None and not isinstance(item, Table | AoT):
            last = index
    if last is None or last + 1 >= len(container.body):
        table[key] = value
        return
    # tomlkit's only way to insert at a place; its `_insert_after` went in 0.15.3
    trivia = container.body[last][1].trivia
    if "\n" not in trivia.trail:
        trivia.trail += "\n"
    container._insert_at(last + 1, key, value)
