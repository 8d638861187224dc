"""`restore` (and `up --from-snapshot`): a new cluster from one snapshot file (pure).

Decisions: whether every host is this cluster's (refused otherwise: restore replaces the
data of every host it names, and nothing overrides that); with `--from-snapshot`, that no
host holds etcd data or runs etcd (refused: that is `restore`'s job); where each host's old
data goes (renamed beside the data dir, or, for a mount point, moved into a folder inside
it; never deleted) and where the restored member is prepared (next to the data dir, on its
file system); whether the restore tool must take --bump-revision/--mark-compacted.

Steps, in the order they run, with the safety order of a restore: nothing stops before the
snapshot was checked on this machine [verify] and on every host [restore HOST]:
[verify] -> [certs] -> [release] -> [install HOST] (all at once) -> [check] (the restore
flags, when asked for) -> [restore HOST] (the file sent, its sha256 checked on the host,
etcd's own restore into a folder next to the data dir; all at once) -> [stop HOST] ->
[aside HOST] (old data moved aside, the restored member put in its place) -> [start] every
member together -> [healthy].
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.core.identity import IdentityObserved, identity_refusals
from orchestrator.core.inventory import Inventory
from orchestrator.core.ownership import ASIDE_PREFIX, RESTORE_PREFIX, DirFacts
from orchestrator.core.plan import Plan, Refusal, Step

FORCED = (
    "Check the inventory: restore replaces the data of every host it names. Only when those "
    "hosts are known to be this cluster's: etcd-deploy destroy --force, then "
    "up --from-snapshot."
)


@dataclass(frozen=True)
class SnapshotCheck:
    """The snapshot file as this machine checked it: its integrity hash (always), and
    etcd's own `snapshot status` when this machine can run the release (else None)."""

    path: str
    name: str
    sha256: str
    revision: int | None = None
    keys: int | None = None

    @property
    def about(self) -> str:
        if self.revision is None:
            return "integrity hash ok"
        return f"revision {self.revision}, {self.keys} keys"


@dataclass(frozen=True)
class RestoreObserved:
    """What a restore read before deciding: the checked snapshot, each host's facts and
    whose it is, the new cluster token and the run's time stamp (names what is moved
    aside)."""

    snapshot: SnapshotCheck
    identity: IdentityObserved
    token: str
    stamp: str


def stage_dir(data_dir: str, token: str, *, mount_point: bool) -> str:
    """Where the restored member is prepared: next to the data dir, on its file system
    (inside it when it is a mount point)."""
    return (
        f"{data_dir}/{RESTORE_PREFIX}{token}"
        if mount_point
        else f"{data_dir}{RESTORE_PREFIX}{token}"
    )


def aside_dir(data_dir: str, stamp: str, *, mount_point: bool) -> str:
    """Where the old data goes (see `operations.aside_lines`)."""
    suffix = f"before-restore-{stamp}"
    return f"{data_dir}/{ASIDE_PREFIX}{suffix}" if mount_point else f"{data_dir}.{suffix}"


def _refusals(inv: Inventory, obs: RestoreObserved, *, fresh_only: bool) -> tuple[Refusal, ...]:
    refusals, _ = identity_refusals(
        inv, obs.identity, command="restore", force=False, forced=FORCED
    )
    if refusals or not fresh_only:
        return refusals
    busy = [n for n, f in obs.identity.facts.items() if f.holds_cluster]
    if not busy:
        return ()
    return (
        Refusal(
            None,
            f"--from-snapshot makes a brand-new cluster, but {', '.join(busy)} already hold "
            f"etcd data or run etcd; to replace that data: etcd-deploy restore "
            f"{obs.snapshot.path} --yes",
        ),
    )


def _prepare_steps(inv: Inventory, obs: RestoreObserved, names: list[str]) -> list[Step]:
    """Verify, certs, release and install: nothing on a host stops."""
    version = str(inv.cluster.etcd_version)
    snap = obs.snapshot
    steps = [
        Step(
            "verify",
            None,
            f"{snap.name}: sha256 {snap.sha256}, {snap.about}",
            "checked on this machine, before anything stops",
            changes=False,
        ),
        Step(
            "certs",
            None,
            "issue what each host lacks from the local CA (a CA is made when there is none; "
            "valid certs are reused)",
            "the new cluster's members",
            args={"token": obs.token},
        ),
    ]
    arches = sorted({obs.identity.facts[n].arch for n in names})
    steps += [
        Step(
            "release",
            None,
            f"fetch etcd {version} for {arch or 'the hosts'}, verified",
            "before any host changes; only when a host lacks it",
            changes=False,
            args={"arch": arch},
        )
        for arch in arches
    ]
    steps += [
        Step(
            "install",
            name,
            f"etcd {version}, its certs and config for member {name} of a new cluster",
            "only what differs from the host's files",
            parallel=True,
        )
        for name in names
    ]
    return steps


def _restore_steps(
    inv: Inventory,
    obs: RestoreObserved,
    names: list[str],
    *,
    bump_revision: int | None,
    mark_compacted: bool,
) -> list[Step]:
    """Restore next to the data dir on every host, then stop, then swap: the snapshot is
    checked on every host before any member stops."""
    data_dir = inv.cluster.data_dir
    flags = [f"--bump-revision {bump_revision}"] if bump_revision else []
    flags += ["--mark-compacted"] if mark_compacted else []
    steps = []
    if flags:
        steps.append(
            Step(
                "check",
                names[0],
                f"check that etcd {inv.cluster.etcd_version}'s restore tool takes "
                "--bump-revision and --mark-compacted",
                "asked for; older ones lack them (refused then, before anything stops)",
                changes=False,
            )
        )
    folders = {n: obs.identity.facts[n].folders.get(data_dir, DirFacts()) for n in names}
    args = {"token": obs.token, "sha256": obs.snapshot.sha256, "stamp": obs.stamp}
    with_flags = f" ({', '.join(flags)})" if flags else ""
    for name in names:
        mount = folders[name].mount_point
        where = f"inside {data_dir} (a mount point)" if mount else f"next to {data_dir}"
        steps.append(
            Step(
                "restore",
                name,
                f"send {obs.snapshot.name}, check its sha256 on the host, restore member {name} "
                f"from it {where}{with_flags}",
                "before anything stops",
                kind="stage",
                parallel=True,
                args={
                    **args,
                    "mount_point": mount,
                    "bump_revision": bump_revision,
                    "mark_compacted": mark_compacted,
                },
            )
        )
    steps += [
        Step("stop", n, "stop etcd", "every member's restored data is ready", parallel=True)
        for n in names
    ]
    for name in names:
        mount = folders[name].mount_point
        if folders[name].exists:
            moved = f"move {data_dir} aside to {aside_dir(data_dir, obs.stamp, mount_point=mount)}"
            moved += " (never deleted); put the restored member in its place"
        else:
            moved = f"put the restored member in {data_dir}"
        steps.append(
            Step(
                "aside",
                name,
                moved + ", marked as this cluster's",
                "the snapshot replaces its data",
                destructive=True,
                parallel=True,
                args={**args, "mount_point": mount},
            )
        )
    return steps


def plan_restore(
    inv: Inventory,
    obs: RestoreObserved,
    *,
    fresh_only: bool = False,
    bump_revision: int | None = None,
    mark_compacted: bool = False,
) -> Plan:
    """Restore every inventory host from `obs.snapshot`. `fresh_only` is `up
    --from-snapshot`: refused when any host holds data or runs etcd."""
    refusals = _refusals(inv, obs, fresh_only=fresh_only)
    if refusals:
        return Plan("restore", refusals=refusals)
    names = [h.name for h in inv.hosts]
    steps = _prepare_steps(inv, obs, names)
    steps += _restore_steps(
        inv, obs, names, bump_revision=bump_revision, mark_compacted=mark_compacted
    )
    steps += [
        Step(
            "start",
            None,
            f"start etcd on {', '.join(names)}: a new cluster from the restored data",
            "with a new cluster token",
        ),
        Step(
            "healthy",
            None,
            "wait until the cluster is healthy",
            quorum_check=True,
            changes=False,
        ),
    ]
    return Plan("restore", steps=tuple(steps))
