"""`add-node`, `remove-node`, `replace-node`: membership changes, one at a time, with the
inventory file as the persisted source of truth (written before the cluster changes on an
add, after the member is gone on a remove).

add-node is `up` on one host (`planners.up` with `only`); remove-node observes every host
(identity, run locks; an unreachable host is left out) and the cluster, then plans
(`planners.nodes`) and executes; replace-node removes, then adds. A dry run edits the
inventory in memory only.
"""

from __future__ import annotations

from orchestrator.adapters.inventory_file import (
    add_host_to_file,
    read_inventory_text,
    remove_host_from_file,
)
from orchestrator.adapters.lock import new_owner
from orchestrator.commands.up import run_up
from orchestrator.core.errors import EXIT_OK, EtcdDeployError, UsageError
from orchestrator.core.host_lock import LockOwner
from orchestrator.core.inventory import Inventory
from orchestrator.core.inventory_edits import with_host_added, with_host_removed
from orchestrator.core.inventory_rules import parse_inventory
from orchestrator.core.plan import Plan, Step
from orchestrator.core.planners.nodes import RemoveObserved, plan_remove_node
from orchestrator.engine.cluster import observe
from orchestrator.engine.context import RunContext
from orchestrator.engine.executor import Execution, Handler, execute, show_plan
from orchestrator.engine.hosts import release_locks
from orchestrator.engine.identity import lock_and_read, observe_identity, read_unlocked
from orchestrator.engine.membership import hand_over_leadership, remove, wait_removed
from orchestrator.engine.operations import teardown_script


def _with_new_host(
    ctx: RunContext, name: str, address: str | None, etcd_address: str | None
) -> Inventory | None:
    """The inventory with `name` added (None when it is there already), checked as the file
    would be; refused when `name` is known with another address or unknown without one."""
    known = {h.name for h in ctx.inv.hosts}
    if name in known:
        host = ctx.inv.host(name)
        if address and address != host.address:
            raise UsageError(
                f"{ctx.inv.path}: {name} is already in the inventory with address "
                f"{host.address}; edit the file to change it"
            )
        return None
    if not address:
        raise UsageError(
            f"{ctx.inv.path}: no host named {name!r}; give --address to add it "
            f"(hosts: {', '.join(sorted(known))})"
        )
    path = ctx.inv.path
    text = with_host_added(read_inventory_text(path), path, name, address, etcd_address)
    return parse_inventory(text, path)


def add_node(
    ctx: RunContext,
    name: str,
    *,
    address: str | None,
    etcd_address: str | None,
    force: bool,
    dry_run: bool = False,
    as_json: bool = False,
) -> int:
    """Join `name`; a new host given with --address is written to the inventory first (in
    memory only, for a dry run)."""
    edited = _with_new_host(ctx, name, address, etcd_address)
    if edited is not None and dry_run:
        ctx.reload(edited)
    elif edited is not None:
        ctx.lock_state(new_owner("add-node"))  # the inventory edit is a change too
        add_host_to_file(ctx.inv.path, name, str(address), etcd_address)
        ctx.reload()
        ctx.ui.info("inventory", f"added {name} ({address}) to {ctx.inv.path}")
    return run_up(ctx, force=force, only=name, dry_run=dry_run, as_json=as_json)


def _check_removable(ctx: RunContext, name: str) -> None:
    inv = ctx.inv
    inv.host(name)  # an unknown host fails before anything connects
    if len(inv.hosts) == 1:
        raise UsageError(
            f"{name} is the only host of {inv.path}: removing it would remove the last "
            "member; `destroy --yes` removes the whole cluster"
        )
    remove_host_from_file(inv.path, name, check_only=True)  # the edit must work: check first


def plan_removal(
    ctx: RunContext, name: str, *, wipe: bool, force: bool, dry_run: bool
) -> tuple[Plan, list[str], LockOwner | None]:
    """Observe (with the run locks unless `dry_run`) and plan; (plan, hosts locked, owner)."""
    names = [h.name for h in ctx.inv.hosts]
    if dry_run:
        facts = read_unlocked(ctx, names, tolerate_unreachable=True)
        owner: LockOwner | None = None
    else:
        owner, facts = lock_and_read(ctx, "remove-node", names, tolerate_unreachable=True)
    try:
        observed = RemoveObserved(observe_identity(ctx, facts), observe(ctx.client()))
        plan = plan_remove_node(ctx.inv, name, observed, wipe=wipe, force=force)
    except BaseException:
        if owner is not None:
            release_locks(ctx, owner, list(facts))
        raise
    return plan, list(facts), owner


def remove_node(
    ctx: RunContext,
    name: str,
    *,
    wipe: bool,
    force: bool,
    dry_run: bool = False,
    as_json: bool = False,
) -> int:
    """Remove `name` from the membership (quorum permitting), clean its host, drop it from
    the inventory. A host that cannot be reached is still removed from the membership."""
    _check_removable(ctx, name)
    plan, locked, owner = plan_removal(ctx, name, wipe=wipe, force=force, dry_run=dry_run)
    if dry_run:
        return show_plan(ctx, plan, as_json=as_json)
    cleaned: list[str] = []
    try:
        for noop in plan.noops:
            ctx.ui.info(f"remove {name}", noop.reason)
        execute(ctx, plan, _removal_handlers(ctx, name, cleaned))
    finally:
        if owner is not None:
            release_locks(ctx, owner, [n for n in locked if n not in cleaned])
    if name not in locked:  # never read, never locked: nothing on it was touched
        ctx.ui.warn(f"remove {name}", f"{name} is unreachable: its files were left in place")
    return EXIT_OK


def _removal_handlers(ctx: RunContext, name: str, cleaned: list[str]) -> dict[str, Handler]:
    inv = ctx.inv
    client = ctx.client()

    def hand_over(step: Step, _run: Execution) -> None:
        hand_over_leadership(client, observe(client), step.args["member"], ctx.ui.log)

    def remove_member(step: Step, _run: Execution) -> None:
        member = step.args["member"]
        remaining = [inv.client_url(h) for h in inv.hosts if h.name != name]
        remove(client, member.id)
        wait_removed(client, member.id, remaining)
        ctx.ui.info(step.label, f"member {member.id:x} removed; the cluster has a leader")

    def clean(step: Step, _run: Execution) -> None:
        if _clean_host(ctx, name, wipe=step.args["wipe"]):
            cleaned.append(name)

    def drop(_step: Step, _run: Execution) -> None:
        remove_host_from_file(inv.path, name)
        ctx.ui.info("inventory", f"removed {name} from {inv.path}")

    return {
        "hand-over": hand_over,
        "remove-member": remove_member,
        "clean": clean,
        "inventory": drop,
    }


def _clean_host(ctx: RunContext, name: str, *, wipe: bool) -> bool:
    """Stop etcd on the removed host and remove its files; the teardown drops the lock.
    False when the host could not be cleaned (its files are left in place)."""
    phase = f"remove {name}"
    script = teardown_script(ctx.inv, wipe_data=wipe, marker=ctx.marker(create=False))
    try:
        said = ctx.conn(name).run(script).stdout
    except EtcdDeployError as exc:
        ctx.ui.warn(phase, f"could not clean the host ({exc}); its files were left in place")
        return False
    for line in said.splitlines():
        if line.startswith("kept "):
            ctx.ui.warn(phase, line + "; remove it by hand if it is ours")
    kept = "" if wipe else f"; data dir {ctx.inv.cluster.data_dir} kept (--wipe removes it)"
    ctx.ui.info(phase, f"etcd stopped and disabled, its files removed{kept}")
    return True


def replace_node(
    ctx: RunContext,
    old: str,
    new: str,
    *,
    address: str,
    etcd_address: str | None,
    force: bool,
    dry_run: bool = False,
    as_json: bool = False,
) -> int:
    """Replace a dead member: remove it first, then add the new host (etcd's own order). A
    dry run shows both plans: the add as planned against today's cluster (the removal
    happens first in the real run)."""
    if new in {h.name for h in ctx.inv.hosts}:
        raise UsageError(f"{ctx.inv.path}: {new} is already in the inventory")
    ctx.inv.host(old)  # fails before anything changes when OLD is unknown
    if not dry_run:
        remove_node(ctx, old, wipe=False, force=force)
        ctx.reload()
        return add_node(ctx, new, address=address, etcd_address=etcd_address, force=force)
    _check_removable(ctx, old)
    removal, _, _ = plan_removal(ctx, old, wipe=False, force=force, dry_run=True)
    path = ctx.inv.path
    text = with_host_removed(read_inventory_text(path), path, old)
    text = with_host_added(text, path, new, address, etcd_address)
    ctx.reload(parse_inventory(text, path))
    return run_up(ctx, force=force, only=new, dry_run=True, as_json=as_json, before=removal)
