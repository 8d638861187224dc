"""Never touch what is not ours: a typo, a stale inventory, another cluster's address or a
cut connection must not destroy data. Each test checks the hosts' folders, modes, owners
and etcd data afterwards."""

from __future__ import annotations

import json
import time
from pathlib import Path

from orchestrator.adapters.inventory_file import load_inventory
from orchestrator.adapters.transport import Pool
from orchestrator.core.host_plan import DesiredFile
from orchestrator.engine.operations import files_tar, write_files_script
from tests.e2e.load import put_keys, read_prefix
from tests.lab.driver import HOSTS, Lab

FOREIGN = "/var/lib/etcd-appdata"  # somebody's folder, named as data_dir by mistake


def folder_state(lab: Lab, host: str, path: str) -> str:
    """Mode, owner and every file's sha256 under `path` (one string to compare)."""
    return lab.exec(
        host,
        f"stat -c '%a %U %G' {path}; cd {path} && find . -type f | sort | xargs -r sha256sum",
        check=False,
    ).stdout


def etcd_data(lab: Lab, host: str) -> str:
    return lab.exec(
        host, "ls /var/lib/etcd/member 2>&1; systemctl is-active etcd", check=False
    ).stdout


def test_up_never_adopts_a_folder_that_is_not_ours(make_cli, lab: Lab) -> None:
    """A data_dir naming somebody's non-empty folder: `up` refuses before any host changes
    (no re-own to etcd 0700); `destroy --yes` leaves the folder as it was."""
    cli = make_cli(3, extra=f'data_dir = "{FOREIGN}"\n')
    lab.exec(
        "etcd2",
        f"mkdir -p {FOREIGN}/reports && echo q3 > {FOREIGN}/reports/q3.txt && "
        f"echo keep > {FOREIGN}/notes && chmod 0755 {FOREIGN} && chown nobody {FOREIGN}",
    )
    before = folder_state(lab, "etcd2", FOREIGN)
    refused = cli("up")
    assert refused.returncode == 5, refused.stderr
    assert f"{FOREIGN} (cluster.data_dir) is not empty and carries no etcd-deploy marker" in (
        refused.stderr
    )
    assert "etcd2" in refused.stderr and "Traceback" not in refused.stderr
    assert folder_state(lab, "etcd2", FOREIGN) == before
    for name in ("etcd1", "etcd2", "etcd3"):  # nothing was installed anywhere
        assert lab.exec(name, "id etcd; ls /opt/bin/etcd", check=False).returncode != 0, name
    destroyed = cli("destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stderr
    assert f"kept {FOREIGN}: it carries no marker of this cluster" in destroyed.stderr
    assert folder_state(lab, "etcd2", FOREIGN) == before


def test_destroy_of_another_clusters_inventory_is_refused(
    make_cli, lab: Lab, tmp_path: Path
) -> None:
    """An inventory of another cluster (or a mistyped address) reaching our members:
    `destroy --yes` reads the hosts first and refuses; the cluster keeps running."""
    ours = make_cli(3)
    assert ours("up").returncode == 0
    other = lab.inventory(tmp_path / "other" / "inventory.toml", 1, cluster="other")
    before = etcd_data(lab, "etcd1")
    dry = ours("destroy", "--dry-run", "-i", str(other))
    assert dry.returncode == 5 and "destroy refused: etcd1:" in dry.stderr, dry.stderr
    refused = ours("destroy", "--yes", "-i", str(other))
    assert refused.returncode == 5, refused.stderr
    assert "destroy refused: etcd1:" in refused.stderr
    assert "belongs to cluster 'lab'" in refused.stderr
    assert "--force destroys them anyway" in refused.stderr
    assert etcd_data(lab, "etcd1") == before and "active" in before
    assert ours.status()["healthy"]
    # Our own inventory destroys our own cluster, markers and all.
    assert ours("destroy", "--yes").returncode == 0
    for name in ("etcd1", "etcd2", "etcd3"):
        assert lab.exec(name, "ls -A /var/lib/etcd /etc/etcd", check=False).returncode != 0


def test_purge_state_removes_only_what_is_ours(make_cli, lab: Lab) -> None:
    """`state_dir = "."`: the inventory's own folder. --purge-state takes the CA, certs and
    backups, and leaves the inventory and another cluster's key next to them."""
    cli = make_cli(1, extra='state_dir = "."\n')
    folder = cli.inventory.parent
    (folder / "other-cluster-ca.key").write_text("not ours\n")
    assert cli("up").returncode == 0
    assert (folder / "pki" / "ca.key").exists()
    purged = cli("destroy", "--yes", "--purge-state")
    assert purged.returncode == 0, purged.stderr
    assert (folder / "other-cluster-ca.key").read_text() == "not ours\n"
    assert cli.inventory.exists()
    assert not (folder / "pki").exists() and not (folder / "cluster-id").exists()
    assert "kept what etcd-deploy did not write there" in purged.stderr


def test_remove_node_with_a_stale_address_never_wipes_a_live_voter(make_cli, lab: Lab) -> None:
    """etcd2's etcd_address edited in the inventory, etcd3 down: `remove-node etcd2 --wipe`
    must not take etcd2 for "not a member" and wipe it (that loses quorum)."""
    cli = make_cli(3)
    assert cli("up").returncode == 0
    lab.exec("etcd3", "systemctl stop etcd")
    text = cli.inventory.read_text()
    cli.inventory.write_text(
        text.replace(
            f'address = "{HOSTS["etcd2"]}"\n',
            f'address = "{HOSTS["etcd2"]}"\netcd_address = "172.29.50.99"\n',
        )
    )
    for force in ([], ["--force"]):  # --force is about quorum, never about whose host
        refused = cli("remove-node", "etcd2", "--wipe", *force)
        assert refused.returncode == 5, refused.stderr
        assert "its member advertises https://172.29.50.12:2380" in refused.stderr
    # The host check passed (etcd.env says what the inventory says), the member is still
    # matched by name and peer URL.
    lab.exec("etcd2", "sed -i 's/172.29.50.12:2380/172.29.50.99:2380/' /etc/etcd/etcd.env")
    mismatch = cli("remove-node", "etcd2", "--wipe")
    assert mismatch.returncode == 5, mismatch.stderr
    assert "member etcd2" in mismatch.stderr and "was etcd_address or peer_port edited?" in (
        mismatch.stderr
    )
    assert lab.exec("etcd2", "systemctl is-active etcd").stdout.strip() == "active"
    assert lab.exec("etcd2", "ls /var/lib/etcd/member/snap/db").returncode == 0
    assert 'etcd_address = "172.29.50.99"' in cli.inventory.read_text()  # not removed from it
    lab.exec("etcd3", "systemctl start etcd")
    cli.inventory.write_text(text)
    assert cli.status()["healthy"]


def test_a_cut_stream_leaves_every_old_file_and_a_rerun_converges(make_cli, lab: Lab) -> None:
    """New etcd.env, server cert and key sent to a running member; the SSH connection dies
    part-way. The member keeps its old, complete files (a new cert never sits beside an old
    key) and keeps serving; the next `up` converges and the one after changes nothing."""
    cli = make_cli(1)
    assert cli("up").returncode == 0
    paths = ["/etc/etcd/etcd.env", "/etc/etcd/pki/server.crt", "/etc/etcd/pki/server.key"]

    def sums() -> str:
        return lab.exec("etcd1", "sha256sum " + " ".join(paths)).stdout

    before = sums()
    padding = b"# " + b"x" * 1000 + b"\n"
    files = [
        DesiredFile(paths[0], b"ETCD_NAME=broken\n" + padding * 1500, 0o640, "root", "etcd", "env"),
        DesiredFile(paths[1], b"not a cert\n" + padding * 1500, 0o644, "etcd", "etcd", "cert"),
        DesiredFile(paths[2], b"not a key\n" + padding * 1500, 0o600, "etcd", "etcd", "key"),
    ]
    archive = files_tar(files)
    pool = Pool(load_inventory(cli.inventory), log=lambda _n, _m: None)
    conn = pool["etcd1"]

    def cut(sent: int, _total: int) -> None:
        if sent > len(archive) // 2:
            raise OSError("connection cut by the test")

    try:
        conn.run(write_files_script(files, False), stdin=archive, progress=cut, check=False)
    except Exception as exc:  # the transport reports the dead connection
        assert "connection cut by the test" in str(exc)
    else:
        raise AssertionError("the cut transfer did not fail")
    finally:
        pool.close()
    time.sleep(1)  # the host notices the closed channel
    assert sums() == before
    assert cli.status()["healthy"]
    staged = lab.exec("etcd1", "ls /etc/etcd/pki /etc/etcd").stdout
    again = cli("up")
    assert again.returncode == 0, again.stderr + staged
    assert sums() == before
    noop = cli("up")
    assert noop.returncode == 0 and "no changes:" in noop.stderr, noop.stderr


def test_a_data_dir_that_is_a_mount_point(make_cli, lab: Lab) -> None:
    """/var/lib/etcd is its own file system (with lost+found) on every host: `up` adopts it,
    `restore` (which cannot rename a mount point) restores into it and moves the old data
    aside inside it, `destroy` empties it and leaves the mount and lost+found."""
    three = ["etcd1", "etcd2", "etcd3"]
    for name in three:
        lab.exec(
            name,
            "mkdir -p /var/lib/etcd && mount -t tmpfs -o mode=0755 tmpfs /var/lib/etcd && "
            "mkdir /var/lib/etcd/lost+found",
        )
    cli = make_cli(3)
    assert cli("up").returncode == 0
    pki = cli.inventory.parent / ".etcd-deploy" / "lab" / "pki"
    endpoint = f"https://{HOSTS['etcd1']}:2379"
    put_keys(endpoint, pki, 50)
    backup = cli("backup", "--json")
    assert backup.returncode == 0, backup.stderr
    put_keys(endpoint, pki, 80)  # after the backup: gone once restored
    restored = cli("restore", json.loads(backup.stdout)["file"], "--yes")
    assert restored.returncode == 0, restored.stderr
    assert cli.status()["healthy"]
    assert len(read_prefix(endpoint, pki, "/keys/")) == 50
    aside_of: dict[str, str] = {}
    for name in three:
        entries = lab.exec(name, "mountpoint -q /var/lib/etcd && ls -A /var/lib/etcd").stdout
        names = entries.split()
        assert {"lost+found", "member", ".etcd-deploy"} <= set(names), (name, names)
        aside = [n for n in names if n.startswith(".etcd-deploy-aside-before-restore-")]
        assert len(aside) == 1, names  # the old data, moved aside inside the mount
        aside_of[name] = aside[0]
        assert lab.exec(name, f"ls /var/lib/etcd/{aside[0]}/member/snap/db").returncode == 0
    assert cli("plan").returncode == 0  # the restored cluster is what up would build
    assert cli("destroy", "--yes").returncode == 0
    for name in three:  # emptied; what restore moved aside stays, as on any other disk
        left = lab.exec(name, "mountpoint -q /var/lib/etcd && ls -A /var/lib/etcd").stdout
        assert sorted(left.split()) == sorted([aside_of[name], "lost+found"]), (name, left)


def test_a_symlinked_host_file_is_never_read_nor_written_through(make_cli, lab: Lab) -> None:
    """ca.crt replaced by a link to a root-only file: `plan` shows no byte of it and says the
    link will be replaced; `up` replaces the link, and the linked file stays as it was."""
    cli = make_cli(1)
    assert cli("up").returncode == 0
    lab.exec(
        "etcd1",
        "echo TOPSECRET > /root/secret && chmod 0600 /root/secret && "
        "ln -sf /root/secret /etc/etcd/pki/ca.crt",
    )
    plan = cli("plan")
    assert plan.returncode == 10, plan.stderr
    assert "TOPSECRET" not in plan.stdout + plan.stderr
    assert "/etc/etcd/pki/ca.crt: a symlink on the host: replaced by the file" in plan.stdout
    assert cli("up").returncode == 0
    assert lab.exec("etcd1", "cat /root/secret; stat -c %a /root/secret").stdout == (
        "TOPSECRET\n600\n"
    )
    assert lab.exec("etcd1", "test -L /etc/etcd/pki/ca.crt", check=False).returncode == 1
    assert cli.status()["healthy"]
    lab.exec("etcd1", "rm -f /root/secret")


def test_another_tools_config_dir_is_never_taken_over(make_cli, lab: Lab) -> None:
    """An etcdadm-style /etc/etcd (etcd.env of another cluster, pki/) on etcd3 and no data:
    `up` refuses, even with --force, and the folder stays as it was."""
    cli = make_cli(3)
    lab.exec(
        "etcd3",
        "mkdir -p /etc/etcd/pki && echo secret > /etc/etcd/pki/ca.key && "
        "printf 'ETCD_NAME=etcd3\\nETCD_INITIAL_CLUSTER_TOKEN=etcd-cluster-1\\n' "
        "> /etc/etcd/etcd.env",
    )
    before = folder_state(lab, "etcd3", "/etc/etcd")
    for force in ([], ["--force"]):
        refused = cli("up", *force)
        assert refused.returncode == 5, refused.stderr
        assert "/etc/etcd (cluster.config_dir) is not empty and carries no etcd-deploy marker" in (
            refused.stderr
        )
        assert "never takes over another tool's config dir" in refused.stderr
    assert folder_state(lab, "etcd3", "/etc/etcd") == before
    assert lab.exec("etcd1", "ls /opt/bin/etcd", check=False).returncode != 0


def test_a_symlinked_data_dir_is_refused_not_followed(make_cli, lab: Lab) -> None:
    """/var/lib/etcd is a link to another folder on etcd1: `up` (even with --force) and
    `destroy` name it and leave both the link and its target alone."""
    lab.exec(
        "etcd1",
        "mkdir -p /srv/elsewhere && echo keep > /srv/elsewhere/f && "
        "ln -s /srv/elsewhere /var/lib/etcd",
    )
    cli = make_cli(3)
    try:
        for force in ([], ["--force"]):
            refused = cli("up", *force)
            assert refused.returncode == 5, refused.stderr
            assert "/var/lib/etcd (cluster.data_dir) is a symlink to /srv/elsewhere" in (
                refused.stderr
            )
        destroyed = cli("destroy", "--yes")
        assert destroyed.returncode == 5, destroyed.stderr  # the host check names it too
        assert "is a symlink" in destroyed.stderr
        assert lab.exec("etcd1", "readlink /var/lib/etcd; cat /srv/elsewhere/f").stdout == (
            "/srv/elsewhere\nkeep\n"
        )
    finally:
        lab.exec("etcd1", "rm -rf /srv/elsewhere /var/lib/etcd")
