"""Shared fixtures: an isolated dpmbench cache per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["DPMBENCH_CACHE"] = str(tmp_path_factory.mktemp("dpmbench-cache"))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op torch thread for a module of many small evaluations (several times faster on shared cores);
    modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh artifact directory (``DPMBENCH_ARTIFACTS``) for one test."""
    monkeypatch.setenv("DPMBENCH_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"
