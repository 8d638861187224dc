"""The SSH transport against real sshd: every byte a command prints comes back."""

from __future__ import annotations

from pathlib import Path

from orchestrator.adapters.inventory_file import load_inventory
from orchestrator.adapters.transport import Pool
from tests.lab.driver import HOSTS, Lab


def test_output_is_complete_even_when_the_exit_status_arrives_first(
    lab: Lab, tmp_path: Path
) -> None:
    """sshd can send a command's exit status before its last output; a reader that stops at
    the status loses the tail. Many short commands with outputs of all sizes, on every host."""
    inventory = lab.inventory(tmp_path / "inventory.toml", len(HOSTS), version="3.5.30")
    pool = Pool(load_inventory(inventory), log=lambda _n, _m: None)
    sizes = [1, 100, 4095, 32_768, 70_000, 300_000, 1_000_000]

    def one(conn) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
        wrong = []
        for _round in range(15):
            for size in sizes:
                out = conn.run(f"head -c {size} /dev/zero | tr '\\0' x; echo END", quiet=True)
                if out.stdout != "x" * size + "END\n":
                    wrong.append((size, len(out.stdout)))
        return wrong

    try:
        results = pool.map(one, list(HOSTS))
    finally:
        pool.close()
    assert {n: r.value for n, r in results.items()} == {n: [] for n in HOSTS}


def test_up_as_a_sudo_user_through_a_jump_host(make_cli, lab: Lab) -> None:
    """The inventory's `user` + `sudo = true` and `jump_host`: a non-root user whose commands
    run under `sudo -n`, every host reached through etcd4 (strict host keys on both hops)."""
    cli = make_cli(3)
    for name in ("etcd1", "etcd2", "etcd3"):
        lab.exec(
            name,
            "id deploy >/dev/null 2>&1 || useradd -m -s /bin/sh deploy; "
            "echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/etcd-deploy-lab; "
            "chmod 0440 /etc/sudoers.d/etcd-deploy-lab",
        )
    text = cli.inventory.read_text().replace(
        'user = "root"\n', f'user = "deploy"\nsudo = true\njump_host = "root@{HOSTS["etcd4"]}"\n'
    )
    cli.inventory.write_text(text)
    first = cli("up")
    assert first.returncode == 0, first.stderr
    assert cli.status()["healthy"]
    again = cli("up")
    assert again.returncode == 0 and again.stderr.count("no changes:") == 3, again.stderr
    for name in ("etcd1", "etcd2", "etcd3"):
        assert lab.exec(name, "ps -o user= -C etcd").stdout.split() == ["etcd"]
        log = lab.exec(name, "journalctl -u ssh --no-pager -o cat").stdout
        assert f"Accepted publickey for deploy from {HOSTS['etcd4']}" in log, name
