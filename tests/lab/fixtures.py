"""Pytest fixtures for the lab: a local mirror of real etcd releases on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.mirror import build_mirror, default_mirror_dir, serve_mirror


@pytest.fixture(scope="session")
def release_mirror() -> Iterator[str]:
    """Base URL (`http://127.0.0.1:PORT`) of the release mirror, built once and served.

    The mirror lives in `default_mirror_dir()` (`$ETCD_DEPLOY_LAB_MIRROR` or
    `~/.cache/etcd-deploy-lab/mirror`); building is a no-op when it is already complete.
    """
    root = build_mirror(default_mirror_dir())
    with serve_mirror(root) as url:
        yield url
