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


class Verdict(Enum):
    """What a failed direct connection means for the run."""

    FALL_BACK = "fall back to SSH"  # the port is closed to us: SSH from now on
    BLOCKED = "blocked"  # the port is closed to us and the setting forbids SSH: an error
    DOWN = "down"  # nothing answers on the host either: etcd is not serving there


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


def must_ask_host(failure: DirectFailure) -> bool:
    """Whether the host's own view (through SSH) is needed to decide: a refused connection
    means "nothing listens" as well as "a firewall's reset"."""
    return failure is DirectFailure.REFUSED


def verdict(setting: str, failure: DirectFailure, answers_on_host: bool = False) -> Verdict:
    """What a failed direct connection means. `answers_on_host`: the member's port accepts
    a connection made on its own host (asked through SSH when `must_ask_host`).

    A blocked port is a property of the network: "auto" moves to SSH at once (whether or
    not etcd serves yet), "direct" stops, even before a new cluster's `up` touches any
    host. A refused one says nothing about the network unless etcd listens on the host."""
    if failure is DirectFailure.BLOCKED or answers_on_host:
        return Verdict.FALL_BACK if setting == "auto" else Verdict.BLOCKED
    return Verdict.DOWN


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
