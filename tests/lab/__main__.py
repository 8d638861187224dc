"""Shell entry for the lab: `python -m tests.lab up [N] | down | status | ssh HOST -- CMD | ...`.

`control up | down | exec -- CMD...` drives the control namespace of the bastion topology
(tests/lab/control_ns.py): run a command there to see the lab as the CLI does through a bastion.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from tests.lab.control_ns import ControlNamespace
from tests.lab.driver import Lab, LabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="bring up N hosts (default 5); idempotent")
    p.add_argument("count", nargs="?", type=int, default=5)
    sub.add_parser(
        "down", help="remove the control namespace, hosts and the lab network (guard route stays)"
    )
    sub.add_parser("status", help="list lab hosts and their state")
    p = sub.add_parser("ssh", help="run a command on a host over SSH (strict host keys)")
    p.add_argument("host")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("inventory", help="write an inventory and known_hosts for the lab")
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--version", default="3.5.30")
    p.add_argument("--release-url", default="")
    p.add_argument("--out", type=Path, default=Path("inventory.toml"))
    p.add_argument("--jump-host", default=None, help="e.g. bastion (the bastion topology)")
    p = sub.add_parser("clean", help="bring hosts back to bare (no etcd-deploy footprint)")
    p.add_argument("hosts", nargs="*")
    for fault in ("stop", "start", "kill", "freeze", "thaw", "cut", "heal"):
        sub.add_parser(fault, help=f"fault helper: {fault} a host").add_argument("host")
    p = sub.add_parser("control", help="the control namespace: up | down | exec -- CMD...")
    p.add_argument("action", choices=["up", "down", "exec"])
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    lab = Lab()
    try:
        if args.cmd == "up":
            started = time.monotonic()
            hosts = lab.up(args.count)
            print(
                f"lab up: {', '.join(h.name for h in hosts)} "
                f"in {time.monotonic() - started:.1f} s; "
                f"known_hosts {lab.known_hosts}"
            )
        elif args.cmd == "down":
            lab.down()
        elif args.cmd == "status":
            for name, address, state in lab.status():
                print(f"{name:8} {address:15} {state}")
        elif args.cmd == "ssh":
            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            return subprocess.call(lab.ssh_command(args.host, *command))
        elif args.cmd == "inventory":
            lab.inventory(
                args.out,
                args.hosts,
                version=args.version,
                release_url=args.release_url,
                jump_host=args.jump_host,
            )
            print(f"wrote {args.out} and {lab.known_hosts}")
        elif args.cmd == "clean":
            lab.clean([lab.host(h) for h in args.hosts] if args.hosts else None)
        elif args.cmd == "control":
            return _control(args.action, args.command)
        else:
            getattr(lab, args.cmd)(args.host)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


def _control(action: str, command: list[str]) -> int:
    namespace = ControlNamespace()
    if action == "up":
        namespace.up()
        print(f"control namespace {namespace.name} up:\n{namespace.describe()}", end="")
    elif action == "down":
        namespace.down()
    else:
        command = command[1:] if command[:1] == ["--"] else command
        if not command:
            print("lab: control exec needs a command (control exec -- CMD...)", file=sys.stderr)
            return 2
        return subprocess.call([*namespace.prefix(), *command])
    return 0


if __name__ == "__main__":
    sys.exit(main())
