"""Shared test setup: keep every test's database and cache away from the user's."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Importing app.py opens the configured database: point it at a throwaway file before any import.
_TMP = Path(tempfile.mkdtemp(prefix="corea-tests-"))
os.environ.setdefault("COREA_DB_URL", f"sqlite:///{_TMP / 'app.sqlite'}")

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("COREA_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture
def data_dir() -> Path:
    """The shared benchmark data folder; skips the test when it is absent."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"benchmark data not found at {DATA_DIR} (set COREA_DATA_DIR)")
    return DATA_DIR
