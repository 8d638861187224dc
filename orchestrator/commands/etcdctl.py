"""`etcdctl [--host H] -- ARGS`: etcdctl on a member through SSH, output streamed, its exit
code passed through (the choice and the script: `core.etcdctl_call`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import BinaryIO

from orchestrator.core import etcdctl_call
from orchestrator.engine.cluster import observe
from orchestrator.engine.context import RunContext


def run_etcdctl(ctx: RunContext, host_name: str | None, args: list[str]) -> int:
    inv = ctx.inv
    if host_name:
        host, why = inv.host(host_name), "chosen"
    else:
        host, why = etcdctl_call.leader_host(inv, observe(ctx.client())), "leader"
    ctx.ui.info(
        "etcdctl",
        f"on {host.name} ({why}, {host.address}), endpoints {etcdctl_call.endpoint(inv)} "
        "(its own member)",
    )
    script = etcdctl_call.remote_script(inv, host, args)
    return ctx.conn(host).stream(script, (_sink(sys.stdout.buffer), _sink(sys.stderr.buffer)))


def _sink(out: BinaryIO) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    return write
