"""Inventory model, validation, derived URLs and comment-preserving write-back."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.adapters.inventory_file import (
    add_host_to_file,
    load_inventory,
    remove_host_from_file,
    set_cluster_key_in_file,
)
from orchestrator.core.errors import InventoryError, UsageError
from orchestrator.core.inventory import (
    DEFAULT_RELEASE_URL,
    Cluster,
    Host,
    SSHSettings,
    url_host,
)
from orchestrator.core.inventory_edits import with_cluster_key
from orchestrator.core.inventory_rules import parse_inventory
from orchestrator.core.inventory_schema import SCHEMA
from orchestrator.core.versions import Version

HERE = Path(__file__).parent
BAD = sorted((HERE / "inventories" / "bad").glob("*.toml"))
REPO = HERE.parent.parent

MINIMAL = """\
[cluster]
name = "demo"
etcd_version = "3.5.30"

[ssh]
known_hosts = "known_hosts"

[[hosts]]
name = "etcd1"
address = "192.0.2.11"

[[hosts]]
name = "etcd2"
address = "192.0.2.12"

[[hosts]]
name = "etcd3"
address = "192.0.2.13"
"""

COMMENTED = """\
# Production etcd for the payments team.
[cluster]
name = "demo"                # do not rename
etcd_version = "3.5.30"      # bumped by upgrade

[cluster.flags]
heartbeat-interval = 100     # ms, ~RTT

# SSH goes through the default key.
[ssh]
known_hosts = "known_hosts"

# The first member, rack A.
[[hosts]]
name = "etcd1"               # never reuse
address = "192.0.2.11"

# The second member, rack B.
[[hosts]]
name = "etcd2"
address = "192.0.2.12"

# The third member, rack C.
[[hosts]]
name = "etcd3"
address = "192.0.2.13"

# End of file.
"""


def write(folder: Path, text: str, name: str = "inventory.toml") -> Path:
    """Write an inventory and an (empty) known_hosts next to it."""
    (folder / "known_hosts").touch()
    path = folder / name
    path.write_text(text)
    return path


def replace_key(text: str, key: str, line: str) -> str:
    """Replace the `key = ...` line of a TOML text (first occurrence)."""
    new, count = re.subn(rf"(?m)^{re.escape(key)} = .*$", line, text, count=1)
    assert count == 1, key
    return new


def host_block(name: str, address: str) -> str:
    return f'\n[[hosts]]\nname = "{name}"\naddress = "{address}"\n'


# --------------------------------------------------------------------------- bad inventories


def test_there_are_enough_bad_inventories() -> None:
    assert len(BAD) >= 25


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_inventory_is_refused_with_one_clear_line(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: '"
    expected = first.removeprefix("# expect: ")
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    message = str(caught.value)
    assert expected in message
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert caught.value.path == str(path)


def test_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[cluster]\nname = "demo\n')
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert caught.value.key == ""
    assert re.search(r"line 2, column \d+", str(caught.value))


def test_missing_file_is_an_inventory_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="inventory file not found"):
        load_inventory(tmp_path / "nope.toml")


def test_unknown_key_without_close_match_has_no_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("[ssh]\n", "[ssh]\nzzz = 1\n"))
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert caught.value.key == "ssh.zzz"
    assert "did you mean" not in str(caught.value)


def test_inventory_error_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('name = "demo"', 'name = "Demo"'))
    with pytest.raises(UsageError):
        load_inventory(path)


# --------------------------------------------------------------------------- good inventories


def test_minimal_inventory_gets_every_default(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, MINIMAL))
    c = inv.cluster
    assert inv.path == tmp_path / "inventory.toml"
    assert (c.name, c.etcd_version, c.release_url) == (
        "demo",
        Version(3, 5, 30),
        DEFAULT_RELEASE_URL,
    )
    assert (c.client_port, c.peer_port) == (2379, 2380)
    assert (c.data_dir, c.install_dir, c.config_dir) == ("/var/lib/etcd", "/opt/bin", "/etc/etcd")
    assert (c.cert_days, c.ca_days, c.renew_within_days) == (365, 3650, 30)
    assert (c.extra_sans, c.flags, c.bootstrap) == ((), {}, "learner")
    assert c.state_dir == tmp_path / ".etcd-deploy" / "demo"
    assert inv.ssh == SSHSettings(known_hosts=tmp_path / "known_hosts")
    assert inv.hosts[0] == Host("etcd1", "192.0.2.11", "192.0.2.11", 22, "root", ())
    assert [h.name for h in inv.hosts] == ["etcd1", "etcd2", "etcd3"]
    assert inv.warnings == ()


def test_schema_defaults_match_dataclass_defaults() -> None:
    for table, model in (("cluster", Cluster), ("ssh", SSHSettings)):
        for f in dataclasses.fields(model):
            default = SCHEMA[table][f.name].default
            if f.default is not dataclasses.MISSING and f.name != "known_hosts":
                assert f.default == default, (table, f.name)
    assert {f.name for f in dataclasses.fields(Cluster)} == set(SCHEMA["cluster"])
    assert {f.name for f in dataclasses.fields(SSHSettings)} == set(SCHEMA["ssh"])
    assert {f.name for f in dataclasses.fields(Host)} == set(SCHEMA["hosts"])


def test_full_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").touch()
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "ssh_config").touch()
    text = """\
[cluster]
name = "prod-1"
etcd_version = "3.6.1"
release_url = "http://user:secret@mirror.example.com/etcd/"
client_port = 12379
peer_port = 12380
data_dir = "/srv//etcd/data/"
install_dir = "/usr/local/bin"
config_dir = "/etc/etcd-prod"
cert_days = 1
ca_days = 1
extra_sans = ["etcd.example.com", "*.etcd.example.com", "2001:DB8::1", "10.1.0.1"]
state_dir = "state"
bootstrap = "parallel"
renew_within_days = 0

[cluster.release_sha256]
"3.6.1/amd64" = "ABababababababababababababababababababababababababababababababab"

[cluster.flags]
heartbeat-interval = 100
enable-pprof = true
snapshot-catchup-ratio = 0.5
auto-compaction-retention = "1h"

[ssh]
user = "deploy"
identity_file = "~/.ssh/id_ed25519"
known_hosts = "known_hosts"
port = 2222
sudo = true
jump_host = "admin@[fd00::99]:2200"
host_key_check = "accept-new"
config_file = "ssh_config"

[[hosts]]
name = "etcd-a.1"
address = "FD00:0::1"
extra_sans = ["10.1.0.1", "a.example.com"]

[[hosts]]
name = "etcd-b"
address = "etcd-b.example.com"
etcd_address = "10.0.0.2"
ssh_port = 22
ssh_user = "root"

[[hosts]]
name = "C3"
address = "192.0.2.13"
"""
    inv = load_inventory(write(tmp_path, text))
    c = inv.cluster
    assert c.release_url == "http://user:secret@mirror.example.com/etcd"
    assert c.release_sha256 == {"3.6.1/amd64": "ab" * 32}
    assert c.release_pin("3.6.1", "amd64") == "ab" * 32
    assert c.release_pin("3.6.1", "arm64") is None
    assert (c.client_port, c.peer_port, c.cert_days, c.ca_days) == (12379, 12380, 1, 1)
    assert (c.data_dir, c.install_dir, c.config_dir) == (
        "/srv/etcd/data",
        "/usr/local/bin",
        "/etc/etcd-prod",
    )
    assert c.extra_sans == ("etcd.example.com", "*.etcd.example.com", "2001:db8::1", "10.1.0.1")
    assert c.state_dir == tmp_path / "state"
    assert (c.bootstrap, c.renew_within_days) == ("parallel", 0)
    assert c.flags == {
        "heartbeat-interval": "100",
        "enable-pprof": "true",
        "snapshot-catchup-ratio": "0.5",
        "auto-compaction-retention": "1h",
    }
    assert inv.ssh == SSHSettings(
        user="deploy",
        identity_file=home / ".ssh" / "id_ed25519",
        known_hosts=tmp_path / "known_hosts",
        port=2222,
        sudo=True,
        jump_host="admin@[fd00::99]:2200",
        host_key_check="accept-new",
        config_file=tmp_path / "ssh_config",
    )
    a, b, c3 = inv.hosts
    assert a == Host(
        "etcd-a.1",
        "fd00::1",
        "fd00::1",
        2222,
        "deploy",
        ("etcd.example.com", "*.etcd.example.com", "2001:db8::1", "10.1.0.1", "a.example.com"),
    )
    assert (b.address, b.etcd_address, b.ssh_port, b.ssh_user) == (
        "etcd-b.example.com",
        "10.0.0.2",
        22,
        "root",
    )
    assert c3.name == "C3"
    assert inv.warnings == ()


def test_relative_paths_use_the_inventory_folder_not_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv_dir = tmp_path / "inv"
    inv_dir.mkdir()
    (inv_dir / "keys").mkdir()
    (inv_dir / "keys" / "id").touch()
    (inv_dir / "releases").mkdir()
    text = MINIMAL.replace("[ssh]\n", '[ssh]\nidentity_file = "keys/id"\n').replace(
        'etcd_version = "3.5.30"\n', 'etcd_version = "3.5.30"\nrelease_url = "releases"\n'
    )
    path = write(inv_dir, text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    inv = load_inventory(Path(os.path.relpath(path, elsewhere)))
    assert inv.path == path
    assert inv.ssh.identity_file == inv_dir / "keys" / "id"
    assert inv.cluster.release_url == str(inv_dir / "releases")
    assert inv.cluster.state_dir == inv_dir / ".etcd-deploy" / "demo"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("file:///srv/etcd-releases/", "file:///srv/etcd-releases"),
        ("http://127.0.0.5:8080/etcd", "http://127.0.0.5:8080/etcd"),
        ("http://[::1]/etcd/", "http://[::1]/etcd"),
        ("http://localhost/etcd", "http://localhost/etcd"),
        ("/srv/etcd-releases", "/srv/etcd-releases"),
    ],
)
def test_release_url_forms(tmp_path: Path, given: str, stored: str) -> None:
    text = MINIMAL.replace('"3.5.30"\n', f'"3.5.30"\nrelease_url = "{given}"\n')
    assert load_inventory(write(tmp_path, text)).cluster.release_url == stored


def test_accept_new_allows_a_missing_known_hosts(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'known_hosts = "known_hosts"', 'known_hosts = "absent"\nhost_key_check = "accept-new"'
    )
    inv = load_inventory(write(tmp_path, text))
    assert inv.ssh.known_hosts == tmp_path / "absent"


def test_non_root_users_are_fine_with_sudo(tmp_path: Path) -> None:
    text = MINIMAL.replace("[ssh]\n", '[ssh]\nuser = "deploy"\nsudo = true\n')
    text = text.replace('"192.0.2.13"\n', '"192.0.2.13"\nssh_user = "ubuntu"\n')
    inv = load_inventory(write(tmp_path, text))
    assert [h.ssh_user for h in inv.hosts] == ["deploy", "deploy", "ubuntu"]


def test_non_root_default_user_is_fine_when_every_host_overrides_it(tmp_path: Path) -> None:
    text = MINIMAL.replace("[ssh]\n", '[ssh]\nuser = "deploy"\n')
    text = re.sub(r'(address = "[^"]+"\n)', r'\1ssh_user = "root"\n', text)
    assert {h.ssh_user for h in load_inventory(write(tmp_path, text)).hosts} == {"root"}


def test_same_address_with_other_ssh_port_and_own_etcd_address(tmp_path: Path) -> None:
    """A lab behind port forwarding: one SSH address, distinct ports and etcd addresses."""
    hosts = "".join(
        f'\n[[hosts]]\nname = "n{i}"\naddress = "127.0.0.1"\nssh_port = {2200 + i}\n'
        f'etcd_address = "10.0.0.{i}"\n'
        for i in (1, 2, 3)
    )
    text = MINIMAL.split("[[hosts]]")[0] + hosts
    inv = load_inventory(write(tmp_path, text))
    assert [(h.ssh_port, h.etcd_address) for h in inv.hosts] == [
        (2201, "10.0.0.1"),
        (2202, "10.0.0.2"),
        (2203, "10.0.0.3"),
    ]


def test_duplicate_etcd_address_from_default_names_the_address_key(tmp_path: Path) -> None:
    text = MINIMAL.replace('"192.0.2.13"\n', '"192.0.2.13"\netcd_address = "192.0.2.11"\n')
    text = text.replace('name = "etcd1"\naddress = "192.0.2.11"', 'name = "etcd1"\naddress = "h1"')
    text = text.replace('"h1"\n', '"h1"\netcd_address = "192.0.2.11"\n')
    with pytest.raises(InventoryError) as caught:
        load_inventory(write(tmp_path, text))
    assert caught.value.key == "hosts[2] (etcd3).etcd_address"


# --------------------------------------------------------------------------- URLs


def test_urls_bracket_ipv6(tmp_path: Path) -> None:
    text = MINIMAL.replace('address = "192.0.2.12"', 'address = "fd00::12"')
    text = text.replace('address = "192.0.2.13"', 'address = "h3"\netcd_address = "fd00::13"')
    inv = load_inventory(write(tmp_path, text))
    one, two, three = inv.hosts
    assert inv.peer_url(one) == "https://192.0.2.11:2380"
    assert inv.client_url(one) == "https://192.0.2.11:2379"
    assert inv.peer_url(two) == "https://[fd00::12]:2380"
    assert inv.client_url(two) == "https://[fd00::12]:2379"
    assert inv.client_url(three) == "https://[fd00::13]:2379"
    assert inv.client_urls() == tuple(inv.client_url(h) for h in inv.hosts)
    assert inv.initial_cluster() == (
        "etcd1=https://192.0.2.11:2380,etcd2=https://[fd00::12]:2380,etcd3=https://[fd00::13]:2380"
    )
    assert inv.initial_cluster([two]) == "etcd2=https://[fd00::12]:2380"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("fd00::1", "[fd00::1]"),
        ("::1", "[::1]"),
        ("192.0.2.1", "192.0.2.1"),
        ("etcd1.example.com", "etcd1.example.com"),
        ("[fd00::1]", "[fd00::1]"),
    ],
)
def test_url_host(address: str, expected: str) -> None:
    assert url_host(address) == expected


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ip=st.ip_addresses().filter(
        lambda ip: not (ip.is_unspecified or ip.is_multicast or str(ip) == "255.255.255.255")
    )
)
def test_any_ip_address_loads_and_makes_a_parsable_url(tmp_path: Path, ip: object) -> None:
    text = MINIMAL.split("[[hosts]]")[0] + host_block("etcd1", str(ip))
    inv = parse_inventory(text, write(tmp_path, text))
    host = inv.hosts[0]
    assert host.address == str(ip)
    parts = urlsplit(inv.peer_url(host))
    assert ipaddress.ip_address(parts.hostname) == ip
    assert parts.port == 2380


# --------------------------------------------------------------------------- lookup, warnings


def test_host_lookup(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, MINIMAL))
    assert inv.host("etcd2").address == "192.0.2.12"
    with pytest.raises(UsageError) as caught:
        inv.host("etcd9")
    assert type(caught.value) is UsageError
    assert str(caught.value) == (f"{inv.path}: no host named 'etcd9' (hosts: etcd1, etcd2, etcd3)")


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 7, 8])
def test_even_member_count_warns(tmp_path: Path, count: int) -> None:
    text = MINIMAL.split("[[hosts]]")[0] + "".join(
        host_block(f"etcd{i}", f"192.0.2.{i}") for i in range(1, count + 1)
    )
    inv = load_inventory(write(tmp_path, text))
    if count % 2:
        assert inv.warnings == ()
    else:
        assert inv.warnings == (
            f"{count} members tolerate no more failures than {count - 1}; use an odd count",
        )


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("3.4.2", ["end of life"]),
        ("3.4.23", ["end of life"]),
        ("3.5.0", ["etcd-io/etcd#13766"]),
        ("3.5.1", ["etcd-io/etcd#13766", "etcd-io/etcd#19557"]),
        ("3.5.2", ["etcd-io/etcd#13766", "etcd-io/etcd#19557"]),
        ("3.5.3", ["etcd-io/etcd#19557"]),
        ("3.5.19", ["etcd-io/etcd#19557"]),
        ("3.5.20", []),
        ("3.5.30", []),
        ("3.6.0", []),
    ],
)
def test_version_warnings_at_load(tmp_path: Path, version: str, expected: list[str]) -> None:
    """Known-bad releases, 3.4's end of life and the learner-promotion bug each warn once,
    naming the version; a release with none of them is quiet."""
    inv = load_inventory(write(tmp_path, MINIMAL.replace("3.5.30", version)))
    assert len(inv.warnings) == len(expected)
    for warning, marker in zip(inv.warnings, expected, strict=True):
        assert marker in warning and version in warning
    if "etcd-io/etcd#19557" in expected:
        assert "fixed in 3.5.20" in inv.warnings[-1]


# --------------------------------------------------------------------------- write-back


def assert_lines_in_order(text: str, lines: list[str]) -> None:
    """Every line of `lines` appears in `text`, in that order."""
    remaining = text.splitlines()
    for line in lines:
        assert line in remaining, line
        remaining = remaining[remaining.index(line) + 1 :]


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_add_host_keeps_comments_and_layout(tmp_path: Path) -> None:
    path = write(tmp_path, COMMENTED)
    add_host_to_file(path, "etcd4", "fd00::14", etcd_address="10.0.0.14")
    text = path.read_text()
    assert text.startswith(COMMENTED)
    assert text[len(COMMENTED) :] == (
        '\n[[hosts]]\nname = "etcd4"\naddress = "fd00::14"\netcd_address = "10.0.0.14"\n'
    )
    inv = load_inventory(path)
    assert inv.host("etcd4").etcd_address == "10.0.0.14"
    assert no_temp_files(tmp_path)


def test_add_host_without_etcd_address(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    add_host_to_file(path, "etcd4", "192.0.2.14")
    assert "etcd_address" not in path.read_text()
    assert load_inventory(path).host("etcd4").etcd_address == "192.0.2.14"


@pytest.mark.parametrize(
    ("name", "address", "message"),
    [
        ("etcd2", "192.0.2.99", "hosts[3] (etcd2).name: duplicate host name 'etcd2'"),
        ("etcd4", "192.0.2.12", "hosts[3] (etcd4).address: 192.0.2.12 port 22 is already"),
        ("etcd4", "not valid!", "hosts[3] (etcd4).address: 'not valid!' is not a valid"),
        ("-bad", "192.0.2.14", "hosts[3].name: invalid host name '-bad'"),
    ],
)
def test_add_host_refuses_an_invalid_result_and_leaves_the_file(
    tmp_path: Path, name: str, address: str, message: str
) -> None:
    path = write(tmp_path, COMMENTED)
    before = path.read_bytes()
    with pytest.raises(InventoryError) as caught:
        add_host_to_file(path, name, address)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{path}: ")
    assert path.read_bytes() == before
    assert no_temp_files(tmp_path)


def test_add_then_remove_restores_the_file_exactly(tmp_path: Path) -> None:
    path = write(tmp_path, COMMENTED)
    add_host_to_file(path, "etcd4", "192.0.2.14")
    remove_host_from_file(path, "etcd4")
    assert path.read_text() == COMMENTED


def test_remove_middle_host_drops_its_comment_only(tmp_path: Path) -> None:
    path = write(tmp_path, COMMENTED)
    remove_host_from_file(path, "etcd2")
    text = path.read_text()
    assert "etcd2" not in text
    assert "rack B" not in text
    assert text == COMMENTED.replace(
        '# The second member, rack B.\n[[hosts]]\nname = "etcd2"\naddress = "192.0.2.12"\n\n',
        "",
    )
    assert [h.name for h in load_inventory(path).hosts] == ["etcd1", "etcd3"]


def test_remove_first_host_keeps_the_ssh_table_comments(tmp_path: Path) -> None:
    path = write(tmp_path, COMMENTED)
    remove_host_from_file(path, "etcd1")
    text = path.read_text()
    assert "rack A" not in text
    assert "never reuse" not in text
    assert_lines_in_order(
        text,
        [
            "# SSH goes through the default key.",
            "[ssh]",
            'known_hosts = "known_hosts"',
            "",
            "# The second member, rack B.",
            "[[hosts]]",
            "# The third member, rack C.",
            "# End of file.",
        ],
    )


def test_remove_last_host_keeps_the_end_of_file_comment(tmp_path: Path) -> None:
    path = write(tmp_path, COMMENTED)
    remove_host_from_file(path, "etcd3")
    text = path.read_text()
    assert "rack C" not in text
    assert text.endswith('address = "192.0.2.12"\n\n# End of file.\n')
    assert "# The second member, rack B." in text


def test_remove_unknown_host_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, COMMENTED)
    before = path.read_bytes()
    with pytest.raises(UsageError, match=r"no host named 'etcd9' \(hosts: etcd1, etcd2, etcd3\)"):
        remove_host_from_file(path, "etcd9")
    assert path.read_bytes() == before


def test_removing_the_last_remaining_host_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.split('\n[[hosts]]\nname = "etcd2"')[0])
    before = path.read_bytes()
    with pytest.raises(InventoryError, match="hosts: no hosts"):
        remove_host_from_file(path, "etcd1")
    assert path.read_bytes() == before


def test_set_cluster_key_keeps_the_comment(tmp_path: Path) -> None:
    path = write(tmp_path, COMMENTED)
    set_cluster_key_in_file(path, "etcd_version", "3.5.31")
    text = path.read_text()
    assert text == COMMENTED.replace('"3.5.30"      #', '"3.5.31"      #')
    assert load_inventory(path).cluster.etcd_version == Version(3, 5, 31)


def test_edits_are_text_in_text_out_and_write_a_version_as_a_string() -> None:
    path = Path("/srv/inventory.toml")  # only named in errors: the edits touch no file
    edited = with_cluster_key(COMMENTED, path, "etcd_version", Version(3, 5, 31))
    assert edited == COMMENTED.replace('"3.5.30"      #', '"3.5.31"      #')
    crlf = "\ufeff" + COMMENTED.replace("\n", "\r\n")
    assert with_cluster_key(crlf, path, "etcd_version", "3.5.31") == "\ufeff" + edited.replace(
        "\n", "\r\n"
    )


def test_set_new_cluster_key_goes_before_the_flags_table(tmp_path: Path) -> None:
    path = write(tmp_path, COMMENTED)
    set_cluster_key_in_file(path, "cert_days", 30)
    text = path.read_text()
    assert 'etcd_version = "3.5.30"      # bumped by upgrade\ncert_days = 30\n' in text
    assert load_inventory(path).cluster.cert_days == 30
    assert load_inventory(path).cluster.flags == {"heartbeat-interval": "100"}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("etcd_version", "v3.5.31", "cluster.etcd_version: write the version without"),
        ("client_port", "2379", "cluster.client_port: must be an integer"),
        ("colour", "blue", "cluster.colour: unknown key 'colour'"),
    ],
)
def test_set_cluster_key_refuses_invalid_values(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    path = write(tmp_path, COMMENTED)
    before = path.read_bytes()
    with pytest.raises(InventoryError, match=re.escape(message)):
        set_cluster_key_in_file(path, key, value)
    assert path.read_bytes() == before
    assert no_temp_files(tmp_path)


def test_write_back_keeps_mode_and_symlink(tmp_path: Path) -> None:
    real = write(tmp_path, MINIMAL, name="real.toml")
    real.chmod(0o640)
    link = tmp_path / "inventory.toml"
    link.symlink_to(real.name)
    add_host_to_file(link, "etcd4", "192.0.2.14")
    assert link.is_symlink()
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert "etcd4" in real.read_text()


def test_write_back_keeps_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    (tmp_path / "known_hosts").touch()
    path.write_bytes(COMMENTED.replace("\n", "\r\n").encode())
    set_cluster_key_in_file(path, "etcd_version", "3.5.31")
    data = path.read_bytes()
    assert b"3.5.31" in data
    assert b"\n" not in data.replace(b"\r\n", b"")


@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_add_and_remove_node_keep_crlf_and_bom(tmp_path: Path, bom: str) -> None:
    path = tmp_path / "inventory.toml"
    (tmp_path / "known_hosts").touch()
    path.write_bytes((bom + COMMENTED.replace("\n", "\r\n")).encode())
    add_host_to_file(path, "etcd4", "192.0.2.14", etcd_address="10.0.0.14")
    data = path.read_bytes()
    assert b'name = "etcd4"\r\naddress = "192.0.2.14"\r\n' in data
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert data.startswith(bom.encode() + b"# Production etcd")
    assert [h.name for h in load_inventory(path).hosts][-1] == "etcd4"
    remove_host_from_file(path, "etcd4")
    data = path.read_bytes()
    assert b"etcd4" not in data and b"\n" not in data.replace(b"\r\n", b"")
    assert data.startswith(bom.encode() + b"# Production etcd")


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    (tmp_path / "known_hosts").touch()
    path.write_bytes("\ufeff".encode() + MINIMAL.encode())
    assert load_inventory(path).cluster.name == "demo"


def test_deeply_nested_values_are_one_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(InventoryError, match="values nested too deeply"):
        load_inventory(path)
    with pytest.raises(InventoryError, match="TOML syntax error: TOML value nested more"):
        add_host_to_file(path, "etcd4", "192.0.2.14")


# The review of issue 12: each must be refused when the inventory loads, before any SSH.
REPRODUCTIONS: list[tuple[str, str, str]] = [
    ('"192.0.2.12"', '"::ffff:192.0.2.11"', "is already the SSH target of hosts[0] (etcd1)"),
    ('"192.0.2.12"', '"0.0.0.0"', "0.0.0.0 is a wildcard, not the address of one host"),
    ('"192.0.2.12"', '"ff02::1"', "ff02::1 is a multicast or broadcast address"),
    ('name = "etcd2"', 'name = "etcd_2"', "invalid host name 'etcd_2'"),
    ("[ssh]\n", "[ssh]\njump_host = 'admin@192.0.2.13:22'\n", "is hosts[2] (etcd3) itself"),
]
REPRODUCTIONS += [
    ('"3.5.30"', f'"{version}"', message)
    for version, message in (("3.3.25", "is not supported"), ("3.6.0-rc.1", "is a pre-release"))
]
REPRODUCTIONS += [
    ("[cluster]\n", f"[cluster]\n{line}\n", message)
    for line, message in {
        "cert_days = 100000000": "cluster.cert_days: must be at most",
        "data_dir = '/home/admin'": "/home/admin is inside /home",
        "config_dir = '/etc/ssh'": "/etc/ssh is inside /etc",
        "release_url = 'http://u:pw@a.example/e'": "http://u:***@",
    }.items()
]
REPRODUCTIONS.append(
    ("[ssh]\n", "[ssh]\nport = 2379\n", "cluster.client_port: 2379 is the SSH port")
)


@pytest.mark.parametrize(("old", "new", "message"), REPRODUCTIONS)
def test_review_reproductions_are_refused_at_load(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in MINIMAL
    with pytest.raises(InventoryError) as caught:
        load_inventory(write(tmp_path, MINIMAL.replace(old, new, 1)))
    assert message in str(caught.value)
    assert ":pw@" not in str(caught.value)


def test_state_dir_dangling_link_and_proc(tmp_path: Path) -> None:
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    text = MINIMAL.replace("[cluster]\n", f"[cluster]\nstate_dir = '{tmp_path}/gone/x'\n")
    with pytest.raises(InventoryError, match=r"cluster\.state_dir: .*gone is a link to"):
        load_inventory(write(tmp_path, text))
    text = MINIMAL.replace("[cluster]\n", "[cluster]\nstate_dir = '/proc/x'\n")
    with pytest.raises(InventoryError, match=r"cluster\.state_dir: /proc/x is inside /proc"):
        load_inventory(write(tmp_path, text))


def test_too_many_hosts(tmp_path: Path) -> None:
    blocks = [host_block(f"e{i}", f"10.0.{i // 200}.{i % 200 + 1}") for i in range(100)]
    head = MINIMAL.split("[[hosts]]")[0]
    with pytest.raises(InventoryError, match="hosts: 100 hosts: etcd-deploy manages at most 99"):
        load_inventory(write(tmp_path, head + "".join(blocks)))
    assert len(load_inventory(write(tmp_path, head + "".join(blocks[:99]))).hosts) == 99


def test_write_back_refuses_a_broken_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[cluster\n")
    with pytest.raises(InventoryError, match="TOML syntax error"):
        add_host_to_file(path, "etcd4", "192.0.2.14")


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.from_regex(
        r"[A-Za-z0-9]([A-Za-z0-9-]{0,18}[A-Za-z0-9])?(\.[A-Za-z][A-Za-z0-9-]{0,5}[A-Za-z0-9])?",
        fullmatch=True,
    )
)
def test_add_remove_roundtrip_for_any_valid_name(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, COMMENTED)
    if name.lower() in {"etcd1", "etcd2", "etcd3"}:
        return
    add_host_to_file(path, name, "192.0.2.99")
    assert load_inventory(path).host(name).address == "192.0.2.99"
    remove_host_from_file(path, name)
    assert path.read_text() == COMMENTED


# --------------------------------------------------------------------------- the example


def load_example_copy(tmp_path: Path) -> Path:
    """Copy inventory.example.toml with its local file paths pointed at temp files."""
    doc = tomlkit.parse((REPO / "inventory.example.toml").read_text())
    (tmp_path / "known_hosts").touch()
    (tmp_path / "id_ed25519").touch()
    doc["ssh"]["known_hosts"] = str(tmp_path / "known_hosts")
    doc["ssh"]["identity_file"] = str(tmp_path / "id_ed25519")
    path = tmp_path / "inventory.toml"
    path.write_text(tomlkit.dumps(doc))
    return path


def test_example_inventory_loads(tmp_path: Path) -> None:
    inv = load_inventory(load_example_copy(tmp_path))
    assert inv.cluster.name == "demo"
    assert [h.name for h in inv.hosts] == ["etcd1", "etcd2", "etcd3"]
    assert inv.warnings == ()
    assert inv.cluster.flags == {"heartbeat-interval": "100", "election-timeout": "1000"}


def test_example_shows_every_key_with_its_default() -> None:
    text = (REPO / "inventory.example.toml").read_text()
    for table, schema in SCHEMA.items():
        for key, spec in schema.items():
            if key == "flags":
                assert "[cluster.flags]" in text
                continue
            match = re.search(rf"(?m)^(# )?{key} = (.*)$", text)
            assert match, f"{table}.{key} is not documented"
            if isinstance(spec.default, str | int) and table != "hosts":
                assert match[2] == tomlkit.item(spec.default).as_string(), (table, key)


def test_write_back_needs_hosts_tables(tmp_path: Path) -> None:
    text = MINIMAL.split("[[hosts]]")[0].replace(
        "[cluster]", 'hosts = [{ name = "etcd1", address = "192.0.2.11" }]\n[cluster]'
    )
    path = write(tmp_path, text)
    assert load_inventory(path).hosts[0].name == "etcd1"
    for edit in (
        lambda: add_host_to_file(path, "etcd2", "192.0.2.12"),
        lambda: remove_host_from_file(path, "etcd1"),
    ):
        with pytest.raises(InventoryError, match=r"hosts: .*\[\[hosts\]\] table"):
            edit()


def test_add_host_to_a_file_without_hosts(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.split("\n[[hosts]]")[0])
    add_host_to_file(path, "etcd1", "192.0.2.11")
    assert [h.name for h in load_inventory(path).hosts] == ["etcd1"]


def test_backup_table(tmp_path: Path) -> None:
    text = MINIMAL + (
        "\n[backup]\n"
        'to = "s3://etcd-backups/prod"\n'
        'endpoint_url = "https://s3.example.com/"\n'
        'region = "eu-west-1"\n'
        'encrypt_to = ["age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"]\n'
        "keep = 30\nkeep_daily = 7\nkeep_weekly = 4\n"
    )
    b = load_inventory(write(tmp_path, text)).backup
    assert b.to == "s3://etcd-backups/prod/" and b.endpoint_url == "https://s3.example.com"
    assert (b.region, b.profile, b.keep, b.keep_daily, b.keep_weekly) == (
        "eu-west-1",
        None,
        30,
        7,
        4,
    )
    assert len(b.encrypt_to) == 1
    folder = load_inventory(write(tmp_path, MINIMAL + '\n[backup]\nto = "nas/etcd"\n')).backup
    assert folder.to == str(tmp_path / "nas" / "etcd")
    assert load_inventory(write(tmp_path, MINIMAL)).backup.to is None
