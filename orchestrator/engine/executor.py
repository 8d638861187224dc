"""The one executor: runs a command's plan (`orchestrator.core.plan`).

In plan order: refusals stop the run before any step; `background` steps start on their
host and run on while the next steps go (a later step on that host waits for it, and no
step follows a background step that failed); consecutive `parallel` steps of one handler run
on all their hosts at once, each host with its own result; consecutive `rolling` steps go
through the rolling engine (one member at a time, health-gated, leader last, order re-read
before each member); every other step runs alone. At the first failure the run stops, every
background step is waited for, and one line says which steps are done and which are not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from orchestrator.adapters.transport import Pending
from orchestrator.core.errors import EtcdDeployError
from orchestrator.core.plan import Plan, Step
from orchestrator.engine.context import RunContext
from orchestrator.engine.hosts import raise_for_failures
from orchestrator.engine.rolling import roll

if TYPE_CHECKING:
    from orchestrator.adapters.transport import HostConnection
    from orchestrator.core.cluster_view import Member

Handler = Callable[[Step, "Execution"], Any]


@dataclass
class Execution:
    """A plan being run: what is done, what runs in the background."""

    ctx: RunContext
    handlers: Mapping[str, Handler]
    done: list[Step] = field(default_factory=list)
    background: dict[str, tuple[Step, Pending[Any]]] = field(default_factory=dict)

    def ready(self, host: str) -> None:
        """Wait for `host`'s background step. When it, or any finished so far, failed:
        wait for every one and report them all (nothing follows a failed host)."""
        if host in self.background:
            self.background[host][1].result(host)
        if any(p.failed_so_far() for _, p in self.background.values()):
            self.finish()

    def host_ready(self, host: str) -> None:
        """Wait for `host`'s background step; raise its own failure only."""
        if host in self.background:
            error = self.background[host][1].result(host).error
            if error is not None:
                raise error

    def finish(self) -> None:
        """Wait for every background step; raise, per phase, when any failed."""
        by_phase: dict[str, dict[str, Any]] = {}
        for name, (step, pending) in self.background.items():
            by_phase.setdefault(step.phase, {})[name] = pending.result(name)
        for phase, results in by_phase.items():
            raise_for_failures(self.ctx, phase, results)
        self.done.extend(step for step, _ in self.background.values())
        self.background.clear()

    def settle(self) -> None:
        """After a failure: let every background step end (no host is still being written
        when the error is told)."""
        for name, (_, pending) in self.background.items():
            pending.result(name)

    def _handler(self, step: Step) -> Handler:
        return self.handlers[step.handler]

    def start(self, step: Step) -> None:
        assert step.host is not None, f"background step without a host: {step.line()}"
        handler = self._handler(step)
        pending = self.ctx.pool.start(lambda _conn: handler(step, self), [step.host])
        self.background[step.host] = (step, pending)

    def run_parallel(self, steps: list[Step]) -> None:
        by_host = {s.host: s for s in steps if s.host}
        handler = self._handler(steps[0])

        def one(conn: HostConnection) -> Any:
            return handler(by_host[conn.name], self)

        for host in by_host:
            self.ready(host)
        raise_for_failures(self.ctx, steps[0].phase, self.ctx.pool.map(one, list(by_host)))
        self.done.extend(steps)

    def run_rolling(self, steps: list[Step]) -> None:
        by_host = {s.host: s for s in steps if s.host}
        handler = self._handler(steps[0])
        self.finish()  # no member restarts while a host is still being written

        def action(host: Any, member: Member) -> None:
            handler(
                replace(by_host[host.name], args={**by_host[host.name].args, "member": member}),
                self,
            )

        tolerate = steps[0].args.get("tolerate", ())
        finished: list[str] = []
        try:
            roll(
                self.ctx,
                [self.ctx.inv.host(h) for h in by_host],
                action,
                phase=steps[0].phase,
                describe=lambda name: by_host[name].action,
                tolerate=tolerate,
                done=finished,
            )
        finally:
            self.done.extend(by_host[h] for h in finished)

    def run_one(self, step: Step) -> None:
        if step.host:
            self.ready(step.host)
        self._handler(step)(step, self)
        self.done.append(step)


def _group(steps: list[Step], i: int, flag: str) -> list[Step]:
    """The run of consecutive steps from `i` sharing `flag`, phase and handler."""
    first = steps[i]
    group = [first]
    for step in steps[i + 1 :]:
        if not getattr(step, flag) or (step.phase, step.handler) != (first.phase, first.handler):
            break
        group.append(step)
    return group


def execute(ctx: RunContext, plan: Plan, handlers: Mapping[str, Handler]) -> list[Step]:
    """Run `plan` (see the module docstring); return the steps done."""
    refused = plan.refusal_error()
    if refused is not None:
        raise refused
    if plan.steps:
        ctx.links().preflight()  # ssh.etcd_api = "direct": a port closed to us stops it here
    run = Execution(ctx, handlers)
    steps = list(plan.steps)
    i = 0
    try:
        while i < len(steps):
            step = steps[i]
            if step.background:
                run.start(step)
                i += 1
            elif step.rolling:
                group = _group(steps, i, "rolling")
                run.run_rolling(group)
                i += len(group)
            elif step.parallel:
                group = _group(steps, i, "parallel")
                run.run_parallel(group)
                i += len(group)
            else:
                run.run_one(step)
                i += 1
        run.finish()
    except (EtcdDeployError, KeyboardInterrupt):
        run.settle()
        _tell_where(ctx, plan, run.done)
        raise
    return run.done


def _tell_where(ctx: RunContext, plan: Plan, done: list[Step]) -> None:
    if len(plan.steps) < 2:
        return
    left = [s for s in plan.steps if s not in done and s.changes]
    finished = [s for s in done if s.changes]
    ctx.ui.info(
        plan.command,
        f"stopped: {len(finished)} step(s) done"
        + (f" ({', '.join(s.label for s in finished)})" if finished else "")
        + f", {len(left)} not done"
        + (f" ({', '.join(s.label for s in left)})" if left else ""),
    )


def show_plan(ctx: RunContext, plan: Plan, *, as_json: bool = False) -> int:
    """A dry run: print `plan` (text on stdout, or its data with `as_json`), change nothing,
    and return its exit code (10 with changes pending, 0 without, a refusal's code)."""
    if as_json:
        ctx.ui.print_json(plan.as_data())
        return plan.exit_code
    for warning in plan.warnings:
        ctx.ui.warn(plan.command, warning)
    for line in plan.lines():
        ctx.ui.print(line)
    for refusal in plan.refusals:
        ctx.ui.error(plan.command, f"refused: {refusal.line()}")
    if not plan.steps and not plan.noops and not plan.refusals:
        ctx.ui.print("nothing to do")
    return plan.exit_code
