"""Property tests (hypothesis) for the pure rules: upgrade paths, plan diffs, rolling order."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.cluster_view import ClusterView, Member, MemberStatus
from orchestrator.core.errors import SafetyRefusal
from orchestrator.core.facts import HostFacts, RemoteFile
from orchestrator.core.host_plan import DesiredFile, _file_change
from orchestrator.core.rolling_order import LAG_BOUND, next_member
from orchestrator.core.versions import Version, check_upgrade_path

versions = st.builds(
    lambda minor, patch: f"3.{minor}.{patch}", st.integers(4, 7), st.integers(0, 40)
)


@given(st.lists(versions, min_size=1, max_size=5), versions)
@settings(max_examples=300)
def test_an_allowed_upgrade_never_downgrades_or_skips_a_minor(
    current: list[str], target: str
) -> None:
    try:
        path = check_upgrade_path(current, target, allow_known_bad=True)
    except SafetyRefusal:
        return
    t = path.target
    for text in current:
        v = Version(*map(int, text.split(".")), "")
        assert (v.major, v.minor, v.patch) <= (t.major, t.minor, t.patch)
        assert t.minor - v.minor <= 1


@given(st.lists(versions, min_size=1, max_size=5), versions)
def test_every_refusal_names_its_rule(current: list[str], target: str) -> None:
    try:
        check_upgrade_path(current, target, allow_known_bad=False)
    except SafetyRefusal as exc:
        rule = str(exc).split(":", 1)[0]
        assert rule in {
            "known-bad-version",
            "no-downgrade",
            "minor-one-at-a-time",
            "min-source-patch",
            "no-major-upgrade",
        }


env_lines = st.lists(
    st.from_regex(r"ETCD_[A-Z_]{1,12}=[a-z0-9:/.,=-]{0,20}", fullmatch=True), max_size=8
)


def _facts(path: str, text: str) -> HostFacts:
    facts = HostFacts()
    digest = hashlib.sha256(text.encode()).hexdigest()
    facts.files[path] = RemoteFile(digest, 0o640, "root", "etcd")
    facts.texts[path] = text
    facts.active_state = "active"
    return facts


@given(env_lines, env_lines)
def test_a_plan_diff_turns_the_host_file_into_the_wanted_one(
    old: list[str], new: list[str]
) -> None:
    path = "/etc/etcd/etcd.env"
    old_text, new_text = "".join(f"{x}\n" for x in old), "".join(f"{x}\n" for x in new)
    want = DesiredFile(path, new_text.encode(), 0o640, "root", "etcd", "env")
    change = _file_change(want, _facts(path, old_text), running_member=False)
    if old_text == new_text:
        assert change is None
        return
    assert change is not None and change.content_changed
    removed = {
        ln[1:] for ln in change.diff.splitlines() if ln.startswith("-") and not ln.startswith("---")
    }
    added = {
        ln[1:] for ln in change.diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")
    }
    assert removed <= set(old) and added <= set(new)
    assert set(old) - removed <= set(new)  # what the diff keeps is still wanted


@given(
    env_lines,
    st.lists(st.from_regex(r"ETCD_INITIAL_[A-Z]{1,8}=[a-z0-9]{0,8}", fullmatch=True), max_size=3),
)
def test_initial_only_changes_never_touch_a_running_member(
    base: list[str], initial: list[str]
) -> None:
    path = "/etc/etcd/etcd.env"
    old_text = "".join(f"{x}\n" for x in base if not x.startswith("ETCD_INITIAL_"))
    new_text = old_text + "".join(f"{x}\n" for x in initial)
    want = DesiredFile(path, new_text.encode(), 0o640, "root", "etcd", "env")
    assert _file_change(want, _facts(path, old_text), running_member=True) is None


members = st.lists(st.tuples(st.booleans(), st.integers(0, 5000)), min_size=1, max_size=7)


@given(members, st.data())
def test_the_leader_goes_last_unless_it_is_all_that_is_left(spec, data) -> None:  # type: ignore[no-untyped-def]
    ms = [
        Member(i + 1, f"m{i + 1}", (f"https://p{i}",), (f"https://c{i}",), False)
        for i in range(len(spec))
    ]
    leader = data.draw(st.sampled_from(ms))
    view = ClusterView(ms)
    for m, (healthy, behind) in zip(ms, spec, strict=True):
        view.statuses[m.id] = MemberStatus(
            m.client_urls[0],
            m.id,
            leader.id,
            "3.5.1",
            0,
            0,
            2,
            10000,
            10000 - behind,
            0,
            False,
            (),
            1,
        )
        if not healthy and m.id != leader.id:  # (a leader answering as leader is healthy)
            view.errors[m.id] = "unhealthy"
    remaining = data.draw(st.lists(st.sampled_from(ms), min_size=1, unique=True))
    pick = next_member(view, remaining)
    if any(m.id != leader.id for m in remaining):
        assert pick.id != leader.id  # the (healthy) leader is never picked before the others
    behind = dict(zip((m.id for m in ms), (b for _, b in spec), strict=True))
    first = [
        m
        for m in remaining
        if m.id != leader.id and (not view.is_healthy_member(m.id) or behind[m.id] > LAG_BOUND)
    ]
    if first:
        assert pick in first  # the unhealthy and the lagging go first
