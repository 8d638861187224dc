"""A plan: what a command will do, decided before anything changes (pure).

Every state-changing command observes first (facts of each host, the cluster as its members
see it), then calls its planner (`orchestrator.core.planners`), which returns a `Plan`:
ordered steps, each with its phase, host, action and reason, whether it destroys something
and whether a quorum/health gate guards it; no-ops with their reasons; and refusals, as
values. The same plan is printed by `--dry-run` (text, or data with `--json`) and run by the
engine's executor (`orchestrator.engine.executor`), so a dry run shows exactly what the real
run does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.errors import EXIT_CHANGES_PENDING, EXIT_OK, SafetyRefusal


@dataclass(frozen=True)
class Step:
    """One thing a command does.

    `kind` names the executor's handler for it (default: the phase). `background`: started
    on its host and left running while the following steps go on; a later step on the same
    host waits for it (installs, while membership changes go one at a time). `parallel`:
    consecutive parallel steps of one handler run on their hosts at once. `rolling`:
    consecutive rolling steps of one phase go through the rolling engine, which re-reads
    the cluster before each member (the plan's order is its prediction: unhealthy and
    lagging members first, the leader last). `changes`: False for a step that only waits
    or checks (a health gate), which a dry run shows but does not count as a change.
    """

    phase: str
    host: str | None
    action: str
    reason: str = ""
    kind: str = ""
    destructive: bool = False
    quorum_check: bool = False
    background: bool = False
    parallel: bool = False
    rolling: bool = False
    changes: bool = True
    detail: tuple[str, ...] = ()  # extra lines shown by a dry run (a file's diff)
    args: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def handler(self) -> str:
        return self.kind or self.phase

    @property
    def label(self) -> str:
        return f"{self.phase} {self.host}" if self.host else self.phase

    def line(self) -> str:
        flags = [
            flag
            for flag, on in (("destructive", self.destructive), ("quorum", self.quorum_check))
            if on
        ]
        tail = f" ({self.reason})" if self.reason else ""
        marks = f" [{', '.join(flags)}]" if flags else ""
        return f"[{self.label}] {self.action}{tail}{marks}"

    def as_data(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "host": self.host,
            "action": self.action,
            "reason": self.reason,
            "destructive": self.destructive,
            "quorum_check": self.quorum_check,
            "changes": self.changes,
            "detail": list(self.detail),
        }


@dataclass(frozen=True)
class Noop:
    """Something left alone, and why."""

    host: str | None
    reason: str

    def line(self, has_steps: bool = False) -> str:
        """`has_steps`: the host has other steps (this is one thing left alone among them)."""
        if self.host is None:
            return f"= {self.reason}"
        return (
            f"{self.host}: = {self.reason}"
            if has_steps
            else f"{self.host}: no changes ({self.reason})"
        )


@dataclass(frozen=True)
class Refusal:
    """Why the command will not run as asked (a dry run shows it and exits with its code).
    `override`: the flag that would make it run anyway ("" when nothing does)."""

    host: str | None
    reason: str
    override: str = ""
    exit_code: int = SafetyRefusal.exit_code

    def line(self) -> str:
        return f"{self.host}: {self.reason}" if self.host else self.reason


@dataclass(frozen=True)
class Plan:
    command: str
    steps: tuple[Step, ...] = ()
    noops: tuple[Noop, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return any(s.changes for s in self.steps)

    @property
    def exit_code(self) -> int:
        """What a dry run exits with: a refusal's code, 10 with changes pending, else 0."""
        if self.refusals:
            return self.refusals[0].exit_code
        return EXIT_CHANGES_PENDING if self.changes else EXIT_OK

    def hosts(self) -> list[str]:
        """Hosts with a step, in plan order."""
        return list(dict.fromkeys(s.host for s in self.steps if s.host))

    def then(self, after: Plan) -> Plan:
        """This plan followed by `after` (a command made of two: replace-node)."""
        return Plan(
            f"{self.command}+{after.command}",
            steps=(*self.steps, *after.steps),
            noops=(*self.noops, *after.noops),
            refusals=(*self.refusals, *after.refusals),
            warnings=(*self.warnings, *after.warnings),
        )

    def refusal_error(self) -> SafetyRefusal | None:
        """The error a real run stops with before changing anything (None: no refusal)."""
        if not self.refusals:
            return None
        error = SafetyRefusal("; ".join(r.line() for r in self.refusals) + "; nothing was changed")
        error.exit_code = self.refusals[0].exit_code
        return error

    def lines(self) -> list[str]:
        """The plan as text: steps in order (with their detail), then no-ops (refusals are
        told apart, as errors)."""
        out: list[str] = []
        for step in self.steps:
            out.append(step.line())
            out.extend(f"    {d}" for d in step.detail)
        busy = set(self.hosts())
        out.extend(n.line(n.host in busy) for n in self.noops)
        return out

    def as_data(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "changes": self.changes,
            "exit_code": self.exit_code,
            "steps": [s.as_data() for s in self.steps],
            "noops": [{"host": n.host, "reason": n.reason} for n in self.noops],
            "refusals": [
                {"host": r.host, "reason": r.reason, "override": r.override} for r in self.refusals
            ],
            "warnings": list(self.warnings),
        }
