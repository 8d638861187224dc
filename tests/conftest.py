"""Shared pytest setup: the release mirror fixture, and the e2e marker for tests/e2e."""

from __future__ import annotations

import pytest

from tests.lab.fixtures import release_mirror  # noqa: F401 - a fixture


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
