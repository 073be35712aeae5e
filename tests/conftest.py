"""Shared test setup: keep every test's database and cache away from the user's."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Importing app.py opens the configured database: point it at a throwaway file before any import.
_TMP = Path(tempfile.mkdtemp(prefix="corea-tests-"))
os.environ.setdefault("COREA_DB_URL", f"sqlite:///{_TMP / 'app.sqlite'}")
# The probe and calibrator that ship for the embedded SLM change which signal decides; tests of
# other features must not depend on them. Their own tests (test_shipped_signals.py,
# test_integration_models.py) turn them on explicitly.
os.environ.setdefault("COREA_USE_SHIPPED_SIGNALS", "false")
# Likewise the calibration adapter that may ship for it: the real-model tests of the base SLM
# expect the base; test_shipped_adapter.py and test_integration_models.py turn it on themselves.
os.environ.setdefault("COREA_USE_SHIPPED_ADAPTER", "false")

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("COREA_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def package_assets_stay_unwritten():
    """No test, and so no code path a test runs, writes into the package's ``assets/`` (an
    installed package may be read-only and shared; a converted adapter once landed there)."""
    from corea.shipped import ASSETS

    def files() -> dict[str, int]:
        return {str(p.relative_to(ASSETS)): p.stat().st_mtime_ns
                for p in ASSETS.rglob("*") if p.is_file()}

    before = files()
    yield
    after = files()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the tests wrote into corea/assets: {changed}"


@pytest.fixture
def data_dir() -> Path:
    """The shared benchmark data folder; skips the test when it is absent."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"benchmark data not found at {DATA_DIR} (set COREA_DATA_DIR)")
    return DATA_DIR


# --------------------------------------------------------------------- databases under test
PG_URL = os.environ.get("COREA_TEST_PG_URL")
"""A PostgreSQL server for the storage tests (``.ci/run`` starts one with
``scripts/test_postgres.sh``); the PostgreSQL cases skip without it."""


def _pg_admin():
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(PG_URL)
    return psycopg.connect(host=u.host, port=u.port or 5432, user=u.username,
                           password=u.password, dbname=u.database, autocommit=True), u


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database URL: a SQLite file, or a new database on the test PostgreSQL
    server (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'corea.sqlite'}"
        return
    if not PG_URL:
        pytest.skip("no PostgreSQL server: set COREA_TEST_PG_URL "
                    "(eval \"$(bash scripts/test_postgres.sh start)\")")
    pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]'")
    import uuid

    name = f"corea_t_{uuid.uuid4().hex[:12]}"
    conn, u = _pg_admin()
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield u.set(database=name).render_as_string(hide_password=False)
    finally:
        conn, _ = _pg_admin()
        with conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
