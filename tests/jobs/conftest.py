"""Fixtures for the jobs tests: the real dumps the source adapters convert."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def stackexchange_data(shared_data) -> Path:
    path = shared_data / "stackexchange"
    if not path.is_dir():
        pytest.skip(f"real Stack Exchange data absent at {path}")
    return path


@pytest.fixture(scope="session")
def movielens_data(shared_data) -> Path:
    path = shared_data / "movielens-latest-small"
    if not path.is_dir():
        pytest.skip(f"real MovieLens data absent at {path}")
    return path
