"""`add-node`, `remove-node`, `replace-node`: membership changes, one at a time, with the
inventory file as the persisted source of truth (written before the cluster changes on an
add, after the member is gone on a remove)."""

from __future__ import annotations

from orchestrator.adapters.inventory_file import add_host_to_file, remove_host_from_file
from orchestrator.adapters.lock import new_owner
from orchestrator.commands.up import run_up
from orchestrator.core.errors import EtcdDeployError, SafetyRefusal, UsageError
from orchestrator.core.quorum import check_remove
from orchestrator.engine.cluster import observe
from orchestrator.engine.context import RunContext
from orchestrator.engine.hosts import release_locks
from orchestrator.engine.identity import gather_identified
from orchestrator.engine.membership import hand_over_leadership, remove, wait_removed
from orchestrator.engine.operations import teardown_script


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
    the inventory. A host that cannot be reached is still removed from the membership.

    The host is read first: one that holds another cluster is refused, and so is a member
    matched by only one of name and peer URL, or a host where etcd runs that matches no
    member (a stale inventory must never stop and wipe a live voter)."""
    inv = ctx.inv
    host = inv.host(name)
    if len(inv.hosts) == 1:
        raise UsageError(
            f"{name} is the only host of {inv.path}: removing it would remove the last "
            "member; `destroy --yes` removes the whole cluster"
        )
    remove_host_from_file(inv.path, name, check_only=True)  # the edit must work: check first
    phase = f"remove {name}"
    owner, facts = gather_identified(
        ctx,
        "remove-node",
        [h.name for h in inv.hosts],
        force=False,  # --force is about quorum (2 -> 1), never about whose host it is
        forced="Check the inventory; to remove that host's etcd anyway: etcd-deploy destroy "
        "--force with an inventory of that host alone.",
        phase=phase,
        judged=[name],
        tolerate_unreachable=True,
    )
    locked = list(facts)
    cleaned = False
    try:
        client = ctx.client()
        view = observe(client)
        member, problem = view.match_host(name, inv.peer_url(host))
        if problem:
            raise SafetyRefusal(f"[{phase}] refused: {problem}; nothing was changed")
        if member is None:
            if name in facts and facts[name].running:
                raise SafetyRefusal(
                    f"[{phase}] refused: etcd runs on {name}, but no member of the cluster has "
                    f"its name or peer URL {inv.peer_url(host)}; is the inventory stale? "
                    "nothing was changed"
                )
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
        if name in facts:
            cleaned = _clean_host(ctx, name, wipe=wipe)
        else:  # never read, never locked: nothing on it is touched
            ctx.ui.warn(phase, f"{name} is unreachable: its files were left in place")
    finally:
        release_locks(ctx, owner, [n for n in locked if not (cleaned and n == name)])
    remove_host_from_file(inv.path, name)
    ctx.ui.info("inventory", f"removed {name} from {inv.path}")
    return 0


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
) -> int:
    """Replace a dead member: remove it first, then add the new host (etcd's own order)."""
    if new in {h.name for h in ctx.inv.hosts}:
        raise UsageError(f"{ctx.inv.path}: {new} is already in the inventory")
    ctx.inv.host(old)  # fails before anything changes when OLD is unknown
    remove_node(ctx, old, wipe=False, force=force)
    ctx.reload()
    return add_node(ctx, new, address=address, etcd_address=etcd_address, force=force)
