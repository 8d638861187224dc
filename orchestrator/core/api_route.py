"""How the control machine reaches etcd's API: straight to a member's port, or through the
run's SSH connection to that member's host (`[ssh] etcd_api`). Pure decisions; the
connections themselves are `adapters.member_links`.

- `"ssh"`: always through SSH (a direct-tcpip channel from the host to its own member).
- `"direct"`: always straight to the port; a port this machine cannot reach is an error
  that names the port and this setting (never "etcd is down").
- `"auto"` (default): through SSH when the hosts sit behind a jump host (inventory
  `jump_host`, or a ProxyJump in ssh_config); otherwise straight, falling back to SSH for
  the rest of the run when a member's port cannot be reached from here but etcd answers
  through SSH.
"""

from __future__ import annotations

import errno
from enum import Enum

API_SETTINGS = ("auto", "direct", "ssh")
SETTING_KEY = "ssh.etcd_api"


class Path(Enum):
    DIRECT = "direct"
    SSH = "ssh"


class DirectFailure(Enum):
    """Why a direct connection to a member's port failed."""

    REFUSED = "refused"  # a host answered: nothing listens there, or a firewall's reset
    BLOCKED = "blocked"  # no answer or "prohibited": a network or firewall in the way


class HostAnswer(Enum):
    """The member's port, tried from its own host through SSH."""

    OPEN = "open"  # etcd accepts connections there
    CLOSED = "closed"  # the host is reachable, nothing accepts on that port
    NO_SSH = "no SSH"  # the host cannot be reached over SSH either (down, or cut off)


class Verdict(Enum):
    """What a failed direct connection means for the run."""

    FALL_BACK = "fall back to SSH"  # the port is closed to us: SSH from now on
    BLOCKED = "blocked"  # the port is closed to us and the setting forbids SSH: an error
    DOWN = "down"  # etcd does not answer (or the whole host is gone): keep the path


# connect() errnos that say "something in the way", not "nothing listens".
_BLOCKED_ERRNOS = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.EACCES, errno.EPERM}
)


def first_path(setting: str, behind_jump_host: bool) -> Path:
    """The path a run starts with."""
    if setting == "ssh" or (setting == "auto" and behind_jump_host):
        return Path.SSH
    return Path.DIRECT


def classify(error: OSError | TimeoutError) -> DirectFailure:
    """A failed connect(): refused by the host, or blocked on the way."""
    if isinstance(error, TimeoutError) or error.errno in _BLOCKED_ERRNOS:
        return DirectFailure.BLOCKED
    return DirectFailure.REFUSED


def verdict(setting: str, failure: DirectFailure, on_host: HostAnswer) -> Verdict:
    """What a failed direct connection means, with the host's own answer (through SSH).

    The port is closed to us when etcd answers on the host, or when the connect was blocked
    on the way while the host answers SSH (whether or not etcd serves yet: a new cluster's
    first member). A host that answers nothing at all is down, not firewalled (a powered-off
    host's "No route to host" looks like a firewall's): "auto" keeps going straight to the
    others, "direct" lets the command handle a dead member (remove-node, replace-node). A
    refused connect with nothing listening on the host is etcd down there."""
    closed_to_us = on_host is HostAnswer.OPEN or (
        failure is DirectFailure.BLOCKED and on_host is HostAnswer.CLOSED
    )
    if not closed_to_us:
        return Verdict.DOWN
    return Verdict.FALL_BACK if setting == "auto" else Verdict.BLOCKED


def blocked_message(host: str, address: str, port: int, reason: str) -> str:
    """The one line for a port this machine cannot reach in "direct" mode."""
    return (
        f"{host}: port {port} of {address} is not reachable from this machine ({reason}); "
        f'{SETTING_KEY} = "direct" needs it open: set {SETTING_KEY} = "ssh" (or "auto") '
        "in the inventory to reach etcd through SSH"
    )


def fallback_message(host: str, address: str, port: int, reason: str) -> str:
    """The info line when "auto" falls back to SSH."""
    return (
        f"port {port} of {host} ({address}) is not reachable from this machine ({reason}); "
        "etcd's API goes through SSH for the rest of this run "
        f'(set {SETTING_KEY} = "ssh" to skip the direct try)'
    )
