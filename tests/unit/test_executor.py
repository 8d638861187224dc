"""The executor on a plan of recorded steps: order, background work a later step waits for,
parallel steps with per-host results, refusals before any step, and the line that says what
is done when a step fails. A stand-in pool runs the per-host work on threads (no SSH)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator.adapters.transport import HostResult, Pending
from orchestrator.core.errors import PhaseFailure, SafetyRefusal, TransportError
from orchestrator.core.plan import Plan, Refusal, Step
from orchestrator.engine.executor import Execution, execute, show_plan
from tests.unit.helpers import NoPreflight


@dataclass
class Conn:
    name: str


class ThreadPool:
    def start(self, fn: Callable[[Conn], Any], names: Iterable[str]) -> Pending[Any]:
        names = list(names)
        executor = ThreadPoolExecutor(max_workers=max(1, len(names)))

        def one(name: str) -> HostResult[Any]:
            try:
                return HostResult(name, value=fn(Conn(name)))
            except Exception as exc:
                return HostResult(name, error=exc)

        pending = Pending({n: executor.submit(one, n) for n in names})
        executor.shutdown(wait=False)
        return pending

    def map(self, fn: Callable[[Conn], Any], names: Iterable[str]) -> dict[str, HostResult[Any]]:
        return self.start(fn, names).results()


@dataclass
class Recorder:
    lines: list[tuple[str, str, str]] = field(default_factory=list)
    out: list[str] = field(default_factory=list)

    def info(self, phase: str, message: str, **_: Any) -> None:
        self.lines.append(("info", phase, message))

    def warn(self, phase: str, message: str, **_: Any) -> None:
        self.lines.append(("warn", phase, message))

    def error(self, phase: str, message: str, **_: Any) -> None:
        self.lines.append(("error", phase, message))

    def print(self, text: str) -> None:
        self.out.append(text)

    def print_json(self, data: Any) -> None:
        self.out.append(repr(data))


@dataclass
class Ctx:
    ui: Recorder = field(default_factory=Recorder)
    pool: ThreadPool = field(default_factory=ThreadPool)

    def links(self) -> NoPreflight:
        return NoPreflight()


def run(plan: Plan, **handlers: Callable[[Step, Execution], Any]) -> tuple[Ctx, list[Step]]:
    ctx = Ctx()
    done = execute(ctx, plan, handlers)  # type: ignore[arg-type]
    return ctx, done


def test_steps_run_in_order_and_a_step_waits_for_its_hosts_background_work() -> None:
    log: list[str] = []
    lock = threading.Lock()

    def install(step: Step, _run: Execution) -> None:
        time.sleep(0.05 if step.host == "b" else 0)
        with lock:
            log.append(f"install {step.host}")

    def join(step: Step, _run: Execution) -> None:
        with lock:
            log.append(f"join {step.host}")

    plan = Plan(
        "up",
        steps=(
            Step("install", "a", "install"),
            Step("install", "b", "install", background=True),
            Step("join", "b", "join"),
        ),
    )
    _, done = run(plan, install=install, join=join)
    assert log == ["install a", "install b", "join b"]
    assert [s.host for s in done] == ["a", "b", "b"]


def test_a_failed_background_step_stops_the_run_before_the_next_change() -> None:
    joined: list[str] = []

    def install(step: Step, _run: Execution) -> None:
        if step.host == "b":
            raise TransportError("b", "connection refused")

    plan = Plan(
        "up",
        steps=(
            Step("install", "a", "install", background=True),
            Step("install", "b", "install", background=True),
            Step("join", "a", "join"),
            Step("join", "b", "join"),
        ),
    )
    with pytest.raises(TransportError):
        run(plan, install=install, join=lambda s, _r: joined.append(str(s.host)))
    assert joined == []


def test_parallel_steps_run_together_and_every_host_keeps_its_result() -> None:
    seen: list[str] = []

    def teardown(step: Step, _run: Execution) -> None:
        if step.host == "c":
            raise TransportError("c", "unreachable")
        seen.append(str(step.host))

    plan = Plan(
        "destroy", steps=tuple(Step("destroy", h, "tear down", parallel=True) for h in "abc")
    )
    ctx = Ctx()
    with pytest.raises(TransportError):
        execute(ctx, plan, {"destroy": teardown})  # type: ignore[arg-type]
    assert sorted(seen) == ["a", "b"]
    assert ("info", "destroy", "succeeded on: a, b") in ctx.ui.lines


def test_refusals_stop_the_run_before_any_step() -> None:
    ran: list[str] = []
    plan = Plan(
        "remove-node",
        steps=(Step("remove", "a", "remove"),),
        refusals=(Refusal("a", "another cluster's host"),),
    )
    with pytest.raises(SafetyRefusal, match="a: another cluster's host; nothing was changed"):
        run(plan, remove=lambda s, _r: ran.append("x"))
    assert ran == []


def test_a_failure_says_what_is_done_and_what_is_not() -> None:
    def fail(step: Step, _run: Execution) -> None:
        raise PhaseFailure(step.label, None, "etcd failed to start")

    plan = Plan(
        "up",
        steps=(
            Step("release", None, "fetch", changes=False),
            Step("install", "a", "install"),
            Step("join", "b", "join"),
            Step("join", "c", "join"),
        ),
    )
    ctx = Ctx()
    with pytest.raises(PhaseFailure):
        execute(
            ctx, plan, {"release": lambda s, r: None, "install": lambda s, r: None, "join": fail}
        )  # type: ignore[arg-type]
    assert ctx.ui.lines[-1] == (
        "info",
        "up",
        "stopped: 1 step(s) done (install a), 2 not done (join b, join c)",
    )


def test_a_dry_run_prints_the_plan_and_exits_by_what_it_would_do() -> None:
    ctx = Ctx()
    plan = Plan("restart", steps=(Step("restart", "a", "restart etcd", rolling=True),))
    assert show_plan(ctx, plan) == 10  # type: ignore[arg-type]
    assert ctx.ui.out == ["[restart a] restart etcd"]
    assert show_plan(Ctx(), Plan("restart")) == 0  # type: ignore[arg-type]
    refused = Plan("restart", refusals=(Refusal(None, "no quorum"),))
    quiet = Ctx()
    assert show_plan(quiet, refused) == 5  # type: ignore[arg-type]
    assert quiet.ui.lines == [("error", "restart", "refused: no quorum")]
