"""The control machine's SSH files: known_hosts and ssh_config, read before any connection
(a broken file is one clear error naming it, not one per host), and what ssh_config says
about the way to the hosts (a ProxyJump). paramiko is imported only when needed: `status`
may never use SSH.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.core.errors import PreflightError
from orchestrator.core.inventory import Inventory, jump_host_address


def check_local_ssh_files(inv: Inventory) -> None:
    """Read known_hosts and ssh_config once, before any connection: a broken file is one
    clear error naming it, not one per host."""
    import paramiko

    ssh = inv.ssh
    # paramiko raises assorted types for a bad line (SSHException, binascii errors...).
    try:
        if ssh.known_hosts.exists():
            paramiko.HostKeys(str(ssh.known_hosts))
    except Exception as exc:
        raise PreflightError(f"{ssh.known_hosts}: unreadable known_hosts file: {exc}") from None
    targets = [h.address for h in inv.hosts]
    if ssh.jump_host:
        targets.append(jump_host_address(ssh.jump_host))
    for path in _ssh_config_paths(inv):
        try:
            text = path.read_text()
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8
            raise PreflightError(f"{path}: unreadable ssh_config: {exc}") from None
        for target, options in zip(targets, _options_for(path, text, targets), strict=True):
            if options.get("proxycommand", "none").lower() != "none":
                raise PreflightError(
                    f"{path}: a ProxyCommand applies to {target}: etcd-deploy does not run "
                    "proxy commands (one that fails leaves SSH spinning); use "
                    "ssh.jump_host in the inventory, or ssh.config_file naming an "
                    "ssh_config without it"
                )


def _options_for(path: Path, text: str, targets: list[str]) -> list[dict[str, str]]:
    """What the ssh_config `text` (from `path`) sets for each target, read without running
    anything: `Match exec` is refused first (a lookup would run it), and a file paramiko
    cannot read is one PreflightError naming it."""
    _refuse_match_exec(path, text)
    import paramiko

    # paramiko raises assorted types for a bad file (ConfigParseError, ValueError...).
    try:
        config = paramiko.SSHConfig.from_text(text)
        return [dict(config.lookup(target)) for target in targets]
    except Exception as exc:
        raise PreflightError(f"{path}: unreadable ssh_config: {exc}") from None


_USER_SSH_CONFIG = "~/.ssh/config"
_SYSTEM_SSH_CONFIG = "/etc/ssh/ssh_config"


def _ssh_config_paths(inv: Inventory) -> list[Path]:
    """The ssh_config files fabric reads: ssh.config_file, else ~/.ssh/config and the
    system one (those that exist)."""
    if inv.ssh.config_file:
        return [inv.ssh.config_file]
    paths = (Path(_USER_SSH_CONFIG).expanduser(), Path(_SYSTEM_SSH_CONFIG))
    return [p for p in paths if p.is_file()]


def _refuse_match_exec(path: Path, text: str) -> None:
    """`Match exec` runs a local command on every host lookup: refused."""
    for number, line in enumerate(text.splitlines(), 1):
        words = line.replace("=", " ").lower().split()
        if words[:1] == ["match"] and "exec" in words[1:]:
            raise PreflightError(
                f"{path} line {number}: 'Match exec' runs a command on every host lookup; "
                "etcd-deploy refuses it: remove it, or set ssh.config_file to an ssh_config "
                "without it"
            )


def behind_jump_host(inv: Inventory) -> bool:
    """Whether the hosts are reached through a jump host: the inventory's ssh.jump_host, or
    a ProxyJump that ssh_config applies to any of them."""
    if inv.ssh.jump_host:
        return True
    for path in _ssh_config_paths(inv):
        try:
            text = path.read_text()
        except (OSError, ValueError):  # check_local_ssh_files reports it if SSH is used
            continue
        if "proxyjump" not in text.lower():
            continue  # most configs: no need to import paramiko to know
        addresses = [h.address for h in inv.hosts]
        if any(
            o.get("proxyjump", "none").lower() != "none"
            for o in _options_for(path, text, addresses)
        ):
            return True
    return False
