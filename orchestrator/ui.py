"""Everything the user sees: log lines with time, level and `[phase]`, JSON lines, tables,
progress bars. The only module that uses rich."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

LEVEL_STYLE = {"debug": "dim", "info": "", "warn": "yellow", "error": "bold red", "ok": "green"}


class UI:
    """Log sink shared by every workflow. Thread-safe: per-host work logs from worker threads."""

    def __init__(self, *, json_logs: bool = False, verbose: bool = False) -> None:
        self.json_logs = json_logs
        self.verbose = verbose
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.out = Console(highlight=False, soft_wrap=True)
        if not self.out.is_terminal:
            self.out = Console(highlight=False, soft_wrap=True, width=200)  # tables in CI logs
        self._lock = threading.Lock()

    def log(self, level: str, phase: str, message: str, **fields: Any) -> None:
        if level == "debug" and not self.verbose:
            return
        now = datetime.now(UTC)
        with self._lock:
            if self.json_logs:
                record = {
                    "time": now.isoformat(timespec="milliseconds"),
                    "level": level,
                    "phase": phase,
                    "message": message,
                    **fields,
                }
                sys.stderr.write(json.dumps(record) + "\n")
                sys.stderr.flush()
                return
            stamp = now.astimezone().strftime("%H:%M:%S")
            label = f"[{phase}] " if phase else ""
            style = LEVEL_STYLE.get(level, "")
            self.err.print(
                f"{stamp} {level.upper():5} {label}{message}", style=style or None, markup=False
            )

    def debug(self, phase: str, message: str, **fields: Any) -> None:
        self.log("debug", phase, message, **fields)

    def info(self, phase: str, message: str, **fields: Any) -> None:
        self.log("info", phase, message, **fields)

    def warn(self, phase: str, message: str, **fields: Any) -> None:
        self.log("warn", phase, message, **fields)

    def error(self, phase: str, message: str, **fields: Any) -> None:
        self.log("error", phase, message, **fields)

    def print(self, text: str) -> None:
        """Plain output on stdout (results, not logs)."""
        self.out.print(text, markup=False, highlight=False)

    def print_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def table(
        self,
        title: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        styles: Sequence[str | None] | None = None,
    ) -> None:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for i, row in enumerate(rows):
            table.add_row(*row, style=(styles[i] if styles else None))
        self.out.print(table)

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Any]:
        """A transfer progress bar (silent in JSON mode or when stderr is not a terminal).

        Yields a callable `advance(done_bytes, total_bytes)`.
        """
        if self.json_logs or not self.err.is_terminal:
            yield lambda done, total=None: None
            return
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=self.err,
            transient=True,
        )
        with bar:
            task = bar.add_task(description, total=total)

            def advance(done: int, total_bytes: int | None = None) -> None:
                bar.update(task, completed=done, total=total_bytes or total)

            yield advance
