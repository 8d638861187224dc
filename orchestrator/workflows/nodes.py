"""`add-node`, `remove-node`, `replace-node`: membership changes, one at a time, with the
inventory file as the persisted source of truth (written before the cluster changes on an
add, after the member is gone on a remove)."""

from __future__ import annotations

from orchestrator.cluster import observe
from orchestrator.context import RunContext
from orchestrator.errors import EtcdDeployError, SafetyRefusal, UsageError
from orchestrator.inventory import add_host_to_file, remove_host_from_file
from orchestrator.lock import LockOwner, new_owner
from orchestrator.membership import hand_over_leadership, remove, wait_removed
from orchestrator.operations import teardown_script
from orchestrator.quorum import check_remove
from orchestrator.workflows.hosts import gather_facts, release_locks
from orchestrator.workflows.up import run_up


def add_node(
    ctx: RunContext,
    name: str,
    *,
    address: str | None,
    etcd_address: str | None,
    force: bool,
) -> int:
    """Join `name`; a new host given with --address is written to the inventory first."""
    known = {h.name for h in ctx.inv.hosts}
    if name in known:
        host = ctx.inv.host(name)
        if address and address != host.address:
            raise UsageError(
                f"{ctx.inv.path}: {name} is already in the inventory with address "
                f"{host.address}; edit the file to change it"
            )
    else:
        if not address:
            raise UsageError(
                f"{ctx.inv.path}: no host named {name!r}; give --address to add it "
                f"(hosts: {', '.join(sorted(known))})"
            )
        ctx.lock_state(new_owner("add-node"))  # the inventory edit is a change too
        add_host_to_file(ctx.inv.path, name, address, etcd_address)
        ctx.reload()
        ctx.ui.info("inventory", f"added {name} ({address}) to {ctx.inv.path}")
    return run_up(ctx, force=force, only=name)


def remove_node(ctx: RunContext, name: str, *, wipe: bool, force: bool) -> int:
    """Remove `name` from the membership (quorum permitting), clean its host, drop it from
    the inventory. A host that cannot be reached is still removed from the membership."""
    inv = ctx.inv
    host = inv.host(name)
    remove_host_from_file(inv.path, name, check_only=True)  # the edit must work: check first
    phase = f"remove {name}"
    owner = new_owner("remove-node")
    others = [h.name for h in inv.hosts if h.name != name]
    locked = list(gather_facts(ctx, owner, {}, others, tolerate_unreachable=True))
    try:
        client = ctx.client()
        view = observe(client)
        member = view.by_peer_url(inv.peer_url(host))
        if member is None:
            ctx.ui.info(phase, f"{name} is not a member of the cluster")
        else:
            if not member.is_learner:
                verdict = check_remove(
                    len(view.voters),
                    view.healthy_voters,
                    view.is_healthy_member(member.id),
                    force,
                )
                if not verdict.allowed:
                    raise SafetyRefusal(
                        f"[{phase}] refused by rule {verdict.rule}: {verdict.detail}; "
                        "nothing was changed"
                    )
            if member.id == view.leader_id:
                hand_over_leadership(client, view, member, ctx.ui.log)
            remaining = [inv.client_url(h) for h in inv.hosts if h.name != name]
            remove(client, member.id)
            wait_removed(client, member.id, remaining)
            ctx.ui.info(phase, f"member {member.id:x} removed; the cluster has a leader")
        _clean_host(ctx, name, owner, wipe=wipe)
    finally:
        release_locks(ctx, owner, locked)
    remove_host_from_file(inv.path, name)
    ctx.ui.info("inventory", f"removed {name} from {inv.path}")
    return 0


def _clean_host(ctx: RunContext, name: str, owner: LockOwner, *, wipe: bool) -> None:
    """Stop etcd on the removed host and remove its files; the teardown drops the lock."""
    phase = f"remove {name}"
    try:
        gather_facts(ctx, owner, {}, [name])
        ctx.conn(name).run(teardown_script(ctx.inv, wipe_data=wipe))
    except EtcdDeployError as exc:
        ctx.ui.warn(phase, f"could not clean the host ({exc}); its files were left in place")
        return
    kept = "" if wipe else f"; data dir {ctx.inv.cluster.data_dir} kept (--wipe removes it)"
    ctx.ui.info(phase, f"etcd stopped and disabled, its files removed{kept}")


def replace_node(
    ctx: RunContext,
    old: str,
    new: str,
    *,
    address: str,
    etcd_address: str | None,
    force: bool,
) -> int:
    """Replace a dead member: remove it first, then add the new host (etcd's own order)."""
    if new in {h.name for h in ctx.inv.hosts}:
        raise UsageError(f"{ctx.inv.path}: {new} is already in the inventory")
    ctx.inv.host(old)  # fails before anything changes when OLD is unknown
    remove_node(ctx, old, wipe=False, force=force)
    ctx.reload()
    return add_node(ctx, new, address=address, etcd_address=etcd_address, force=force)
