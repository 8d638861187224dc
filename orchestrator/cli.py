"""Command line: parse, build a run context, call a workflow, map errors to exit codes.

Exit codes: `orchestrator.core.errors.EXIT_CODES` (the app's epilog lists them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer pinned <0.30

from orchestrator import __version__
from orchestrator.adapters.inventory_file import load_inventory
from orchestrator.core.errors import (
    EXIT_CHANGES_PENDING,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EtcdDeployError,
    SafetyRefusal,
    UsageError,
)
from orchestrator.engine.context import RunContext
from orchestrator.ui import UI

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Deploy and operate production etcd clusters over SSH, agentless.",
    epilog="Exit codes: " + ", ".join(f"{c} {m}" for c, m in EXIT_CODES.items()) + ".",
)


class LogFormat(StrEnum):
    text = "text"
    json = "json"


INVENTORY_OPT = typer.Option(
    None,
    "-i",
    "--inventory",
    metavar="PATH",
    help="Inventory file \\[default: $ETCD_DEPLOY_INVENTORY or ./inventory.toml].",
)
VERBOSE_OPT = typer.Option(False, "-v", "--verbose", help="Show remote commands (no secrets).")
LOG_FORMAT_OPT = typer.Option(
    LogFormat.text, "--log-format", help="text, or json: one object per line on stderr."
)
# Every state-changing command: the same two options, printing the plan its real run executes.
DRY_RUN_OPT = typer.Option(
    False,
    "--dry-run",
    help=f"Print the plan; change nothing (exit {EXIT_CHANGES_PENDING} when it would change "
    f"something, {EXIT_OK} when not, {SafetyRefusal.exit_code} when it would be refused).",
)
PLAN_JSON_OPT = typer.Option(False, "--json", help="With --dry-run: the plan as JSON on stdout.")


def _plan_json(dry_run: bool, as_json: bool) -> None:
    """`--json` prints a plan: it goes with --dry-run."""
    if as_json and not dry_run:
        raise UsageError("--json prints the plan: use it with --dry-run")


POSITIONAL_INV = typer.Argument(
    None, metavar="[INVENTORY]", show_default=False, help="Inventory file (same as -i)."
)


def _inventory_path(positional: Path | None, option: Path | None) -> Path:
    if positional and option and positional != option:
        raise UsageError(f"two inventories given: {positional} and -i {option}")
    chosen = positional or option or os.environ.get("ETCD_DEPLOY_INVENTORY") or "inventory.toml"
    path = Path(chosen)
    if not path.exists():
        raise UsageError(f"{path}: inventory not found (give -i PATH or set ETCD_DEPLOY_INVENTORY)")
    return path


def _run(
    inventory: Path | None,
    verbose: bool,
    log_format: LogFormat,
    action: Callable[[RunContext], int],
    positional: Path | None = None,
    cluster_overrides: dict[str, Any] | None = None,
    plan: tuple[bool, bool] | None = None,
) -> None:
    """Build the context, run `action`, and turn every outcome into an exit code.

    `cluster_overrides`: [cluster] values a command-line flag sets for this run only.
    `plan`: (dry run, --json) of a state-changing command, checked first.
    """
    ui = UI(json_logs=log_format == LogFormat.json, verbose=verbose)
    ctx: RunContext | None = None
    code = EXIT_OK
    try:
        if plan is not None:
            _plan_json(*plan)
        inv = load_inventory(_inventory_path(positional, inventory))
        if cluster_overrides:
            inv = dataclasses.replace(
                inv, cluster=dataclasses.replace(inv.cluster, **cluster_overrides)
            )
        ctx = RunContext(inv, ui)
        code = action(ctx)
    except EtcdDeployError as exc:
        ui.error("", str(exc))
        code = exc.exit_code
    except KeyboardInterrupt:
        ui.error("", "interrupted; re-run the same command to converge")
        code = EXIT_INTERRUPTED
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        ui.error(
            "",
            f"internal error: {exc.__class__.__name__}: {exc} (run with -v for the "
            "traceback, and please report it)",
        )
        code = EtcdDeployError.exit_code
    finally:
        if ctx is not None:
            _write_stats(ctx)
            ctx.close()
    raise typer.Exit(code)


def _write_stats(ctx: RunContext) -> None:
    """With $ETCD_DEPLOY_STATS set (benchmarks), write SSH commands and bytes per host there."""
    path = os.environ.get("ETCD_DEPLOY_STATS")
    if path:
        connections = ctx.pool.connections if ctx.ssh_used else {}
        stats = {n: dataclasses.asdict(c.counters) for n, c in connections.items()}
        Path(path).write_text(json.dumps(stats))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"etcd-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Deploy and operate production etcd clusters over SSH, agentless (exit codes: see
    the app's epilog)."""


IDENTITY_OPT = typer.Option(
    None,
    "--identity",
    help="age identity file (AGE-SECRET-KEY-1... lines) or OpenSSH private key that "
    "decrypts an encrypted off-site backup.",
)


@app.command()
def up(
    inventory_arg: Path | None = POSITIONAL_INV,
    inventory: Path | None = INVENTORY_OPT,
    dry_run: bool = DRY_RUN_OPT,
    as_json: bool = PLAN_JSON_OPT,
    parallel_bootstrap: bool = typer.Option(
        False,
        "--parallel-bootstrap",
        help="For a brand-new cluster: start every member at once from a static initial "
        'cluster (same as [cluster] bootstrap = "parallel").',
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Also remove stale members and move "
        "aside data dirs of other clusters (never deletes data).",
    ),
    from_snapshot: str | None = typer.Option(
        None,
        "--from-snapshot",
        help="Seed a brand-new cluster from this snapshot file, or an off-site backup "
        "(s3://BUCKET/PREFIX/NAME, or a prefix ending in / for the newest).",
    ),
    identity: Path | None = IDENTITY_OPT,
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Bootstrap or converge the cluster described by the inventory."""
    from orchestrator.commands.offsite import run_restore_from
    from orchestrator.commands.up import run_up

    def action(ctx: RunContext) -> int:
        if from_snapshot is not None:
            if dry_run:
                raise UsageError("--from-snapshot cannot be combined with --dry-run")
            return run_restore_from(ctx, from_snapshot, identity, yes=True, fresh_only=True)
        return run_up(ctx, dry_run=dry_run, force=force, as_json=as_json)

    _run(
        inventory,
        verbose,
        log_format,
        action,
        inventory_arg,
        cluster_overrides={"bootstrap": "parallel"} if parallel_bootstrap else None,
        plan=(dry_run, as_json),
    )


@app.command()
def plan(
    inventory_arg: Path | None = POSITIONAL_INV,
    inventory: Path | None = INVENTORY_OPT,
    as_json: bool = typer.Option(False, "--json", help="The plan as JSON on stdout."),
    force: bool = typer.Option(False, "--force", help="Plan `up --force`."),
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Show what `up` would do, step by step (same as `up --dry-run`; exit 10 when it would
    change something, 5 when it would be refused)."""
    from orchestrator.commands.up import run_up

    _run(
        inventory,
        verbose,
        log_format,
        lambda ctx: run_up(ctx, dry_run=True, force=force, as_json=as_json),
        inventory_arg,
    )


@app.command()
def status(
    inventory: Path | None = INVENTORY_OPT,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Show every member's role, version, DB size, raft state, health and cert expiry.

    Exits 6 when the cluster is degraded.
    """
    from orchestrator.commands.status import show
    from orchestrator.core.errors import ClusterUnhealthy

    def action(ctx: RunContext) -> int:
        return EXIT_OK if show(ctx, as_json=as_json) else ClusterUnhealthy.exit_code

    _run(inventory, verbose, log_format, action)


@app.command()
def destroy(
    inventory: Path | None = INVENTORY_OPT,
    yes: bool = typer.Option(
        False, "--yes", help="Required: confirms that all etcd data on every host is deleted."
    ),
    purge_state: bool = typer.Option(
        False,
        "--purge-state",
        help="Also delete what etcd-deploy keeps in the local state dir (CA, certs, backups).",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Also destroy hosts that seem to hold another cluster, and data dirs that "
        "carry no marker of this cluster.",
    ),
    dry_run: bool = DRY_RUN_OPT,
    as_json: bool = PLAN_JSON_OPT,
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Stop and remove etcd, its files and ALL ITS DATA on every host.

    Each host is read first: one that holds another cluster (another CA, cluster token or
    marker) or a member the inventory does not describe stops the run before any host
    changes. Only folders marked as this cluster's are removed. --dry-run (no --yes needed)
    prints what each host would lose, reading the hosts without locking them."""
    from orchestrator.commands.destroy import run_destroy

    def action(ctx: RunContext) -> int:
        if not yes and not dry_run:
            raise UsageError(
                "destroy deletes every member's data: add --yes to confirm "
                f"(hosts: {', '.join(h.name for h in ctx.inv.hosts)})"
            )
        return run_destroy(
            ctx, purge_state=purge_state, force=force, dry_run=dry_run, as_json=as_json
        )

    _run(inventory, verbose, log_format, action, plan=(dry_run, as_json))


ADDRESS_OPT = typer.Option(
    None, "--address", help="Where SSH connects (and etcd listens, unless --etcd-address)."
)
ETCD_ADDRESS_OPT = typer.Option(None, "--etcd-address", help="Where etcd listens and advertises.")


@app.command("add-node")
def add_node(
    host: str = typer.Argument(..., help="Host name (member name)."),
    inventory: Path | None = INVENTORY_OPT,
    address: str | None = ADDRESS_OPT,
    etcd_address: str | None = ETCD_ADDRESS_OPT,
    force: bool = typer.Option(
        False, "--force", help="Remove a stale member entry for this host first."
    ),
    dry_run: bool = DRY_RUN_OPT,
    as_json: bool = PLAN_JSON_OPT,
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Join HOST as a learner, promoted once in sync.

    A new host given with --address is written to the inventory first. Other members are
    not restarted and get no new certs.
    """
    from orchestrator.commands.nodes import add_node as run

    _run(
        inventory,
        verbose,
        log_format,
        lambda ctx: run(
            ctx,
            host,
            address=address,
            etcd_address=etcd_address,
            force=force,
            dry_run=dry_run,
            as_json=as_json,
        ),
        plan=(dry_run, as_json),
    )


@app.command("remove-node")
def remove_node(
    host: str = typer.Argument(..., help="Host name (member name)."),
    inventory: Path | None = INVENTORY_OPT,
    wipe: bool = typer.Option(False, "--wipe", help="Also delete the host's data dir."),
    force: bool = typer.Option(False, "--force", help="Allow going from 2 members to 1."),
    dry_run: bool = DRY_RUN_OPT,
    as_json: bool = PLAN_JSON_OPT,
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Remove HOST from the cluster, stop etcd on it, drop it from the inventory.

    Refused when the removal would put quorum at risk. The data dir stays unless --wipe.
    """
    from orchestrator.commands.nodes import remove_node as run

    _run(
        inventory,
        verbose,
        log_format,
        lambda ctx: run(ctx, host, wipe=wipe, force=force, dry_run=dry_run, as_json=as_json),
        plan=(dry_run, as_json),
    )


@app.command("replace-node")
def replace_node(
    old: str = typer.Argument(..., help="The dead member's host name."),
    new: str = typer.Argument(..., help="The new host's name."),
    inventory: Path | None = INVENTORY_OPT,
    address: str = typer.Option(..., "--address", help="The new host's address."),
    etcd_address: str | None = ETCD_ADDRESS_OPT,
    force: bool = typer.Option(False, "--force", help="As for add-node and remove-node."),
    dry_run: bool = DRY_RUN_OPT,
    as_json: bool = PLAN_JSON_OPT,
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Replace a dead member: remove OLD first, then add NEW (the order that keeps quorum)."""
    from orchestrator.commands.nodes import replace_node as run

    _run(
        inventory,
        verbose,
        log_format,
        lambda ctx: run(
            ctx,
            old,
            new,
            address=address,
            etcd_address=etcd_address,
            force=force,
            dry_run=dry_run,
            as_json=as_json,
        ),
        plan=(dry_run, as_json),
    )


backup_app = typer.Typer(
    help="Snapshots: take one now (no subcommand), schedule them on the hosts, list them.",
    no_args_is_help=False,
)
app.add_typer(backup_app, name="backup")
OUT_DIR_OPT = typer.Option(
    None, "-o", "--output-dir", help="Local folder \\[default: backups/ in the state dir]."
)


TO_OPT = typer.Option(
    None,
    "--to",
    help="Store off-site: s3://BUCKET/PREFIX/ (any S3-compatible store; AWS_ENDPOINT_URL "
    "and the AWS credential chain) or a folder \\[default: \\[backup] to].",
)


ENCRYPT_TO_OPT = typer.Option(
    [],
    "--encrypt-to",
    help="age recipient (age1...) or SSH public key to encrypt to (repeatable).",
)
KEEP_OPT = typer.Option(
    None, "--keep", min=1, help="Keep only the newest N backups of this cluster."
)
KEEP_DAILY_OPT = typer.Option(
    None, "--keep-daily", min=1, help="With --to: also keep the newest of each of D days."
)
KEEP_WEEKLY_OPT = typer.Option(
    None, "--keep-weekly", min=1, help="With --to: also keep the newest of each of W weeks."
)


@backup_app.callback(invoke_without_command=True)
def backup(
    typer_ctx: typer.Context,
    inventory: Path | None = INVENTORY_OPT,
    out_dir: Path | None = OUT_DIR_OPT,
    to: str | None = TO_OPT,
    encrypt_to: list[str] = ENCRYPT_TO_OPT,
    keep: int | None = KEEP_OPT,
    keep_daily: int | None = KEEP_DAILY_OPT,
    keep_weekly: int | None = KEEP_WEEKLY_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="With --to: take nothing; show which stored backups retention would delete.",
    ),
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Take a snapshot now from a healthy member (the leader preferred).

    With -o, or neither --to nor \\[backup] to: to this machine (a .part file, fsynced,
    integrity-checked, renamed). With --to (or \\[backup] to): encrypted here with age when
    recipients are given, stored with a JSON manifest, and only then pruned by
    --keep/--keep-daily/--keep-weekly.
    """
    if typer_ctx.invoked_subcommand is not None:
        return
    from orchestrator.commands.backup import run_backup, show_backup
    from orchestrator.commands.offsite import offsite_request, preview_retention, run_offsite_backup
    from orchestrator.core.backup_catalog import Retention

    def action(ctx: RunContext) -> int:
        retention = Retention(keep, keep_daily, keep_weekly)
        request = offsite_request(ctx, to, encrypt_to, retention, out_dir)
        if request is None:
            if encrypt_to or keep_daily or keep_weekly or dry_run:
                raise UsageError(
                    "--encrypt-to, --keep-daily, --keep-weekly and --dry-run need --to "
                    "(or [backup] to)"
                )
            show_backup(ctx, run_backup(ctx, out_dir=out_dir, keep=keep), as_json=as_json)
            return EXIT_OK
        if dry_run:
            return preview_retention(ctx, request)
        result = run_offsite_backup(ctx, request)
        if as_json:
            ctx.ui.print_json(dataclasses.asdict(result))
        else:
            ctx.ui.print(result.url)
        return EXIT_OK

    _run(inventory, verbose, log_format, action)


@backup_app.command("schedule")
def backup_schedule(
    inventory: Path | None = INVENTORY_OPT,
    every: str = typer.Option("30m", "--every", help="Interval, e.g. 30m, 1h, 6h, 1d."),
    keep: int = typer.Option(10, "--keep", min=1, help="Snapshots kept on each host."),
    off: bool = typer.Option(False, "--off", help="Remove the scheduled backups."),
    dry_run: bool = DRY_RUN_OPT,
    as_json: bool = PLAN_JSON_OPT,
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Install a systemd timer on every member that snapshots it into /var/backups/etcd.

    --dry-run prints what each host would get (or lose, with --off) and connects to none."""
    from orchestrator.commands.backup import run_schedule

    _run(
        inventory,
        verbose,
        log_format,
        lambda ctx: run_schedule(
            ctx, every=every, keep=keep, off=off, dry_run=dry_run, as_json=as_json
        ),
        plan=(dry_run, as_json),
    )


@backup_app.command("timer")
def backup_timer(
    inventory: Path | None = INVENTORY_OPT,
    to: str | None = TO_OPT,
    encrypt_to: list[str] = ENCRYPT_TO_OPT,
    keep: int | None = KEEP_OPT,
    keep_daily: int | None = KEEP_DAILY_OPT,
    keep_weekly: int | None = KEEP_WEEKLY_OPT,
    on_calendar: str = typer.Option(
        "hourly", "--on-calendar", help="systemd calendar event: hourly, daily, *-*-* 0/6:00"
    ),
    env_file: str = typer.Option(
        "/etc/etcd-deploy/backup.env",
        "--env-file",
        help="EnvironmentFile with AWS_* for the store (create it 0600).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the two files into this folder."),
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Print the systemd service and timer that run `backup --to` on this operations
    machine (nothing is installed: copy them to /etc/systemd/system and enable the timer).
    The service fails with etcd-deploy's exit code when a backup fails."""
    from orchestrator.adapters.localfs import write_atomic
    from orchestrator.commands.offsite import offsite_request, timer_units
    from orchestrator.core.backup_catalog import Retention

    def action(ctx: RunContext) -> int:
        request = offsite_request(ctx, to, encrypt_to, Retention(keep, keep_daily, keep_weekly))
        if request is None:
            raise UsageError("backup timer needs --to (or [backup] to)")
        units = timer_units(ctx, request, on_calendar=on_calendar, env_file=env_file)
        if out is None:
            for name, text in units.items():
                ctx.ui.print(f"# /etc/systemd/system/{name}\n{text}")
            return EXIT_OK
        if not out.is_dir():
            raise UsageError(f"--out {out}: not a folder")
        for name, text in units.items():
            write_atomic(out / name, text.encode(), mode=0o644)
            ctx.ui.info("backup timer", f"wrote {out / name}")
        return EXIT_OK

    _run(inventory, verbose, log_format, action)


@backup_app.command("list")
def backup_list(
    inventory: Path | None = INVENTORY_OPT,
    out_dir: Path | None = OUT_DIR_OPT,
    to: str | None = TO_OPT,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """List backups, newest first: local and on-host ones, or with --to (or \\[backup] to)
    those at an off-site destination (time, revision, size, encrypted, complete)."""
    from orchestrator.commands.backup import run_list
    from orchestrator.commands.offsite import offsite_request, run_offsite_list
    from orchestrator.core.backup_catalog import Retention

    def action(ctx: RunContext) -> int:
        request = offsite_request(ctx, to, [], Retention(), out_dir)
        if request is not None:
            run_offsite_list(ctx, request, as_json=as_json)
        else:
            run_list(ctx, out_dir=out_dir, as_json=as_json)
        return EXIT_OK

    _run(inventory, verbose, log_format, action)


BUMP_OPT = typer.Option(
    None, "--bump-revision", min=1, help="Raise the revision by N (for Kubernetes watchers)."
)
COMPACTED_OPT = typer.Option(
    False, "--mark-compacted", help="Mark old revisions compacted (use with --bump-revision)."
)


@app.command()
def restore(
    snapshot: str = typer.Argument(
        ...,
        help="Snapshot file (from `etcd-deploy backup`), or an off-site backup: "
        "s3://BUCKET/PREFIX/NAME, or a prefix ending in / for the newest of this cluster.",
    ),
    inventory: Path | None = INVENTORY_OPT,
    identity: Path | None = IDENTITY_OPT,
    yes: bool = typer.Option(
        False, "--yes", help="Do it; without it, print the plan only (as --dry-run)."
    ),
    bump_revision: int | None = BUMP_OPT,
    mark_compacted: bool = COMPACTED_OPT,
    dry_run: bool = DRY_RUN_OPT,
    as_json: bool = PLAN_JSON_OPT,
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Disaster recovery: rebuild every inventory host's member from one snapshot.

    The file is verified on this machine, then on every host, before anything stops; each
    old data dir is moved aside, never deleted. Works on fresh hosts and on clusters that
    lost quorum. Without --yes (or with --dry-run): the plan, hosts read without locks.
    """
    from orchestrator.commands.offsite import run_restore_from

    _run(
        inventory,
        verbose,
        log_format,
        lambda ctx: run_restore_from(
            ctx,
            snapshot,
            identity,
            yes=yes,
            bump_revision=bump_revision,
            mark_compacted=mark_compacted,
            dry_run=dry_run,
            as_json=as_json,
        ),
        plan=(dry_run or not yes, as_json),
    )


@app.command()
def upgrade(
    version: str = typer.Argument(..., help="Target etcd version, e.g. 3.5.17."),
    inventory: Path | None = INVENTORY_OPT,
    yes: bool = typer.Option(
        False, "--yes", help="Do it; without it, print the plan (as --dry-run does)."
    ),
    allow_known_bad: bool = typer.Option(
        False, "--allow-known-bad", help="Allow versions with known data bugs (3.5.0-3.5.2)."
    ),
    dry_run: bool = DRY_RUN_OPT,
    as_json: bool = PLAN_JSON_OPT,
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Rolling upgrade to VERSION, one member at a time, leader last.

    Checks the version path first (patch upgrades free; minor versions one at a time; no
    downgrades), takes a backup, and rolls a member that does not come back to its old
    binaries. Updates etcd_version in the inventory at the end. Without --yes (or with
    --dry-run): the plan only (exit 10 when it would change something, 0 when not, 5 or 6
    when refused).
    """
    from orchestrator.commands.upgrade import run_upgrade

    _run(
        inventory,
        verbose,
        log_format,
        lambda ctx: run_upgrade(
            ctx, version, yes=yes, allow_known_bad=allow_known_bad, dry_run=dry_run, as_json=as_json
        ),
        plan=(dry_run or not yes, as_json),
    )


@app.command()
def defrag(
    inventory: Path | None = INVENTORY_OPT,
    threshold: float = typer.Option(
        0.0,
        "--threshold",
        min=0,
        max=100,
        help="Skip members with less than PCT percent free space inside their DB.",
    ),
    dry_run: bool = DRY_RUN_OPT,
    as_json: bool = PLAN_JSON_OPT,
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Defragment every member, one at a time, leader last; disarm NOSPACE afterwards."""
    from orchestrator.commands.maintenance import run_defrag

    _run(
        inventory,
        verbose,
        log_format,
        lambda ctx: run_defrag(ctx, threshold=threshold, dry_run=dry_run, as_json=as_json),
        plan=(dry_run, as_json),
    )


@app.command()
def restart(
    hosts: list[str] = typer.Argument(None, help="Hosts to restart \\[default: all]."),
    inventory: Path | None = INVENTORY_OPT,
    dry_run: bool = DRY_RUN_OPT,
    as_json: bool = PLAN_JSON_OPT,
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Rolling restart of etcd: one member at a time, healthy before the next, leader last."""
    from orchestrator.commands.maintenance import run_restart

    _run(
        inventory,
        verbose,
        log_format,
        lambda ctx: run_restart(ctx, hosts or [], dry_run=dry_run, as_json=as_json),
        plan=(dry_run, as_json),
    )


@app.command()
def etcdctl(
    args: list[str] = typer.Argument(
        None, metavar="-- ARGS...", help="etcdctl's arguments, after `--`."
    ),
    host: str | None = typer.Option(
        None, "--host", help="Member to run it on \\[default: the leader]."
    ),
    inventory: Path | None = INVENTORY_OPT,
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Run etcdctl on a member through SSH, with that host's certs and its own member as the
    endpoint: no certs to copy, no port to open. Output streams; exits with etcdctl's code.

    Example: etcd-deploy etcdctl -- endpoint status --cluster -w table
    """
    from orchestrator.commands.etcdctl import run_etcdctl

    _run(inventory, verbose, log_format, lambda ctx: run_etcdctl(ctx, host, args or []))


certs_app = typer.Typer(help="Certificates: check expiry, renew leaves, rotate the CA.")
app.add_typer(certs_app, name="certs")


@certs_app.command("check")
def certs_check(
    inventory: Path | None = INVENTORY_OPT,
    warn_days: float = typer.Option(30, "--warn-days", help="Flag what expires within N days."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Expiry, issuer and SANs of every cert, from the hosts' files and from what each member
    serves on its client and peer ports. Exits 7 when anything needs renewal (for cron/CI)."""
    from orchestrator.commands.certs import run_check

    _run(
        inventory,
        verbose,
        log_format,
        lambda ctx: run_check(ctx, warn_days=warn_days, as_json=as_json),
    )


@certs_app.command("renew")
def certs_renew(
    hosts: list[str] = typer.Argument(None, help="Hosts to renew \\[default: all]."),
    inventory: Path | None = INVENTORY_OPT,
    within: int | None = typer.Option(
        None, "--within", min=0, help="Only certs expiring within DAYS \\[default: all certs]."
    ),
    dry_run: bool = DRY_RUN_OPT,
    as_json: bool = PLAN_JSON_OPT,
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Re-issue leaf certs from the local CA and push them, with no etcd restart.

    Works on a cluster whose certs have already expired: members that are down are started.
    --dry-run: which certs would be issued again and why, with nothing issued or written.
    """
    from orchestrator.commands.certs import run_renew

    _run(
        inventory,
        verbose,
        log_format,
        lambda ctx: run_renew(
            ctx, within=within, names=hosts or [], dry_run=dry_run, as_json=as_json
        ),
        plan=(dry_run, as_json),
    )


@certs_app.command("rotate-ca")
def certs_rotate_ca(
    inventory: Path | None = INVENTORY_OPT,
    finish: bool = typer.Option(
        False, "--finish", help="Last step: drop the old CA from every member."
    ),
    dry_run: bool = DRY_RUN_OPT,
    as_json: bool = PLAN_JSON_OPT,
    verbose: bool = VERBOSE_OPT,
    log_format: LogFormat = LOG_FORMAT_OPT,
) -> None:
    """Replace the CA without downtime: trust old+new, re-issue every cert, then --finish.

    Between the two runs, give Kubernetes the trust bundle and its new client cert.
    --dry-run: the steps from where the rotation stands, the members' restarts in their
    order (leader last), with no CA made and nothing issued or written.
    """
    from orchestrator.commands.certs import run_rotate_ca

    _run(
        inventory,
        verbose,
        log_format,
        lambda ctx: run_rotate_ca(ctx, finish=finish, dry_run=dry_run, as_json=as_json),
        plan=(dry_run, as_json),
    )


def main() -> None:
    """Entry point. Usage errors are one line (exit 2), like every other error."""
    # paramiko logs (and prints tracebacks for) failures we report ourselves.
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    logging.getLogger("paramiko").propagate = False
    try:
        code = app(prog_name="etcd-deploy", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        code = UsageError.exit_code
    except ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx else ""
        typer.echo(f"etcd-deploy: {exc.format_message()}{hint}", err=True)
        code = exc.exit_code
    except typer.Abort:
        typer.echo("etcd-deploy: aborted", err=True)
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()  # exits with the command's code
