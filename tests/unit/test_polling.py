"""Backoff: growing pauses, never past the deadline (time is faked: no real sleeping)."""

from __future__ import annotations

import pytest

from orchestrator.engine import polling
from orchestrator.engine.polling import Backoff


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(polling.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(polling.time, "sleep", fake.sleep)
    return fake


def test_pauses_grow_to_the_longest_then_stay(clock: FakeClock) -> None:
    backoff = Backoff(10, first=0.1, longest=0.25)
    for _ in range(5):
        assert backoff.pause()
    assert clock.sleeps == pytest.approx([0.1, 0.15, 0.225, 0.25, 0.25])


def test_no_pause_would_pass_the_deadline(clock: FakeClock) -> None:
    backoff = Backoff(1.0, first=0.3, longest=0.3)
    assert [backoff.pause() for _ in range(5)] == [True, True, True, False, False]
    assert sum(clock.sleeps) == pytest.approx(0.9) and clock.now <= 1001.0


def test_work_between_pauses_counts_against_the_deadline(clock: FakeClock) -> None:
    backoff = Backoff(1.0, first=0.1)
    clock.now += 0.95  # a slow request
    assert not backoff.pause()
    assert clock.sleeps == []
