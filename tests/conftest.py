"""Shared fixtures: an isolated dpmbench cache per test session."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["DPMBENCH_CACHE"] = str(tmp_path_factory.mktemp("dpmbench-cache"))
