"""Per-host phases shared by workflows: facts with the run lock, and their release."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from orchestrator.adapters.lock import LeaseRefresher, new_owner, stale_reason_here
from orchestrator.core.errors import EtcdDeployError, PhaseFailure, SafetyRefusal, TransportError
from orchestrator.core.facts import TEXT_KINDS, HostFacts, facts_script, parse_facts
from orchestrator.core.host_lock import (
    LEASE_SECONDS,
    HeldLock,
    LockOwner,
    parse_held,
    refresh_script,
    release_script,
    takeover_script,
)
from orchestrator.core.host_paths import LOCK_PATH
from orchestrator.core.host_plan import DesiredFile
from orchestrator.engine.context import RunContext

RENEW_TIMEOUT = 60  # seconds for one lock renewal on one host

if TYPE_CHECKING:
    from orchestrator.adapters.transport import HostConnection, HostResult


def raise_for_failures(ctx: RunContext, phase: str, results: dict[str, HostResult]) -> None:
    """Log each host's outcome; raise when any host failed (successes stay visible)."""
    failed = {n: r.error for n, r in results.items() if r.error is not None}
    if not failed:
        return
    ok = [n for n, r in results.items() if r.ok]
    if ok:
        ctx.ui.info(phase, f"succeeded on: {', '.join(ok)}")
    first = next(iter(failed.values()))
    if len(failed) == 1 and isinstance(first, EtcdDeployError):
        raise first  # printed once, by the CLI
    for name, error in failed.items():
        ctx.ui.error(f"{phase} {name}", str(error))
    # Several hosts failed the same way (all unreachable, say): keep that exit code.
    failure = EtcdDeployError.exit_code
    codes = {e.exit_code if isinstance(e, EtcdDeployError) else failure for e in failed.values()}
    code = codes.pop() if len(codes) == 1 else failure
    raise PhaseFailure(phase, None, f"failed on {', '.join(failed)}", exit_code=code)


# A lock path the shell can never open: facts read for a dry run write nothing on the host.
NO_LOCK = "/dev/null/etcd-deploy-dry-run"


def _read(
    ctx: RunContext, conn: HostConnection, wanted: list[DesiredFile], lock: str, owner: str
) -> HostFacts:
    """One host's facts, in one command (taking the run lock at `lock`)."""
    script = facts_script(
        ctx.inv,
        [f.path for f in wanted],
        [f.path for f in wanted if f.kind in TEXT_KINDS],
        lock,
        owner,
    )
    return parse_facts(conn.run(script, quiet=True).stdout)


def _leave_out_unreachable(ctx: RunContext, results: dict[str, HostResult[HostFacts]]) -> None:
    for name, result in list(results.items()):
        if isinstance(result.error, TransportError):
            ctx.ui.warn(f"facts {name}", f"unreachable, left out: {result.error}")
            del results[name]


def read_facts(
    ctx: RunContext,
    files: dict[str, list[DesiredFile]],
    names: list[str],
    *,
    tolerate_unreachable: bool = False,
) -> dict[str, HostFacts]:
    """For a dry run: facts as `gather_facts` reads them, without any lock (nothing is
    written, on the hosts or in the state dir)."""
    results = ctx.pool.map(
        lambda conn: _read(ctx, conn, files.get(conn.name, []), NO_LOCK, ""), names
    )
    if tolerate_unreachable:
        _leave_out_unreachable(ctx, results)
    raise_for_failures(ctx, "facts", results)
    return {n: r.value for n, r in results.items() if r.value is not None}


def gather_facts(
    ctx: RunContext,
    owner: LockOwner,
    files: dict[str, list[DesiredFile]],
    names: Iterable[str],
    *,
    tolerate_unreachable: bool = False,
) -> dict[str, HostFacts]:
    """Facts of every host in one command each, taking the run lock on the way.

    With `tolerate_unreachable`, hosts SSH cannot reach are left out (and logged) instead
    of failing the run; a lock held by another live run still does. The state dir's lock
    is taken first.
    """
    ctx.lock_state(owner)

    def one(conn: HostConnection) -> HostFacts:
        facts = _read(ctx, conn, files.get(conn.name, []), LOCK_PATH, owner.render())
        if not facts.lock_acquired:
            take_over(ctx, conn, owner, facts.lock)
            facts.lock_acquired = True
        return facts

    # The first host's lock is taken alone, before the others: of two runs started together,
    # the one that gets it gets them all, and the other is refused instead of both.
    names = list(names)
    results = ctx.pool.map(one, names[:1])
    if all(r.ok or isinstance(r.error, TransportError) for r in results.values()):
        results |= ctx.pool.map(one, names[1:])
    if tolerate_unreachable:
        _leave_out_unreachable(ctx, results)
    acquired = [n for n, r in results.items() if r.ok]
    leases(ctx).hold(owner, acquired)
    try:
        raise_for_failures(ctx, "facts", results)
    except EtcdDeployError:
        release_locks(ctx, owner, acquired)
        raise
    return {n: r.value for n, r in results.items() if r.value is not None}


def _refused(name: str, held: HeldLock, why: str = "") -> SafetyRefusal:
    return SafetyRefusal(
        f"{name}: locked by another etcd-deploy run, {held.describe()}{why}; wait for it to "
        "finish (a lock left by a dead run is taken over automatically once its pid is gone "
        f"on this machine, or once nobody renewed it for {LEASE_SECONDS // 60} minutes)"
    )


def take_over(ctx: RunContext, conn: HostConnection, owner: LockOwner, report: str) -> None:
    """`report` is what the facts command said about the lock it could not take: ours
    already (the same run reading facts again), refused, or taken over when stale, with a
    compare-and-swap on the lock file's sha256 (a run that renewed or took it meanwhile
    wins)."""
    if report.startswith("error "):
        raise SafetyRefusal(f"{conn.name}: cannot take the run lock: {report[6:]}")
    held = parse_held(report)
    if held.owner is not None and held.owner.run_id == owner.run_id:
        return
    if not held.sha256:
        raise SafetyRefusal(
            f"{conn.name}: cannot take the run lock {LOCK_PATH}: it could neither be created "
            "nor read"
        )
    reason = stale_reason_here(held.owner, age=held.age)
    if reason is None:
        raise _refused(conn.name, held)
    ctx.ui.warn(f"lock {conn.name}", f"taking over a stale lock ({reason})")
    answer = conn.run(takeover_script(owner, held.sha256), quiet=True).stdout.strip()
    if answer == "taken":
        return
    if answer.startswith("held"):
        raise _refused(conn.name, parse_held(answer), " (it took the stale lock first)")
    raise SafetyRefusal(f"{conn.name}: cannot take over the run lock: {answer or 'no answer'}")


def leases(ctx: RunContext) -> LeaseRefresher:
    """The run's lease refresher: renews the host locks it holds until they are let go."""
    if ctx.leases is None:
        ctx.leases = LeaseRefresher(
            lambda owner, names: renew_locks(ctx, owner, names),
            warn=lambda name, message: ctx.ui.warn(f"lock {name}", message),
        )
    return ctx.leases


def renew_locks(ctx: RunContext, owner: LockOwner, names: list[str]) -> dict[str, str]:
    """One renewal of `owner`'s locks on `names`: what each host answered (see
    `refresh_script`). Runs on the refresher's thread, beside the run's own commands (a
    paramiko transport carries channels from several threads); it never opens a pool."""
    pool = ctx.open_pool()
    if pool is None:  # between a reload and the next command: next time
        return {name: "error no connections open right now" for name in names}
    script = refresh_script(owner.renew(time.time()))

    def one(conn: HostConnection) -> str:
        result = conn.run(script, quiet=True, check=False, timeout=RENEW_TIMEOUT, side=True)
        return result.stdout.strip()

    known = [n for n in names if n in pool.connections]
    results = pool.map(one, known)
    answers = {
        n: (r.value or "error no answer") if r.ok else f"error {r.error}"
        for n, r in results.items()
    }
    return answers | {n: "gone" for n in names if n not in pool.connections}


def release_locks(ctx: RunContext, owner: LockOwner, names: Iterable[str]) -> None:
    names = list(names)
    leases(ctx).drop(owner, names)

    def one(conn: HostConnection) -> None:
        conn.run(release_script(owner), quiet=True, check=False)

    for name, result in ctx.pool.map(one, names).items():
        if not result.ok:
            ctx.ui.warn(f"lock {name}", f"could not release the run lock: {result.error}")


@contextmanager
def locked_hosts(
    ctx: RunContext,
    command: str,
    names: Iterable[str],
    *,
    tolerate_unreachable: bool = False,
    files: dict[str, list[DesiredFile]] | None = None,
) -> Iterator[dict[str, HostFacts]]:
    """Hold the run lock on `names` (their facts, with `files`, are yielded) for the `with`
    block."""
    owner = new_owner(command)
    facts = gather_facts(ctx, owner, files or {}, names, tolerate_unreachable=tolerate_unreachable)
    try:
        yield facts
    finally:
        release_locks(ctx, owner, facts)
