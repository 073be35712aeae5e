"""The database going away mid-session: the app keeps answering, says logging is paused, keeps the
turns of that window in the local journal (corea/journal.py) and writes them, in order and once,
when the database is back. SQLite made read-only (``PRAGMA query_only`` on every connection: a
read-only file is not read-only to root), and a PostgreSQL server stopped and started again (its
own throwaway server on 127.0.0.1; needs COREA_TEST_PG_URL, i.e. a machine where
scripts/test_postgres.sh works)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import event

from corea.auth import Roles
from corea.backends.fake import FakeBackend
from corea.config import Settings
from corea.journal import Journal
from corea.service import CoreaService
from corea.ui.ask import AskHandlers

REPO = Path(__file__).resolve().parents[1]


def _service(tmp_path, url):
    settings = Settings(threshold=0.7, db_url=url, cache_dir=tmp_path / "cache")
    return CoreaService(settings,
                        slm=FakeBackend(["\\boxed{4}\nConfidence: 0.9"], model_name="slm"),
                        llm=FakeBackend(["\\boxed{5}"], model_name="llm"))


def _ask(h, q, session="s"):
    return list(h.respond(q, [], 0.7, [], SimpleNamespace(session_hash=session)))[-1]


def _texts(out):
    return "\n".join(m["content"] for m in out[0])


def test_sqlite_read_only_mid_session_journals_then_replays(tmp_path):
    svc = _service(tmp_path, f"sqlite:///{tmp_path / 'log.sqlite'}")
    visitor = AskHandlers(svc, roles=Roles(host="0.0.0.0", on_space=False))
    owner_roles = Roles(token="t")
    owner_roles.sign_in("t", SimpleNamespace(session_hash="o"))
    owner = AskHandlers(svc, roles=owner_roles)
    _ask(visitor, "before 1")
    assert svc.store.count() == 1

    read_only = {"on": True}

    @event.listens_for(svc.store.engine, "connect")
    def _ro(conn, _rec):
        if read_only["on"]:
            conn.execute("PRAGMA query_only=ON")

    svc.store.engine.dispose()  # new connections: read-only
    out = _ask(visitor, "during 1", "v")
    text = _texts(out)
    assert "**Small model's answer:** 4" in text  # still answering
    assert "Logging is paused" in text and "saved when the database is back" in text
    assert "readonly" not in text and str(tmp_path) not in text  # plain words for a visitor
    out = _ask(owner, "during 2", "o")
    assert "attempt to write a readonly database" in _texts(out)  # the owner sees the cause
    assert svc.logging_paused and svc.journal.pending() == 2 and svc.store.count() == 1

    read_only["on"] = False
    svc.store.engine.dispose()  # the file is writable again
    _ask(visitor, "after 1")
    rows = svc.store.list_interactions(limit=None)
    assert [r["question"] for r in reversed(rows)] == ["before 1", "during 1", "during 2",
                                                       "after 1"]
    assert [r["session_id"] for r in reversed(rows)] == ["s", "v", "o", "s"]
    assert svc.journal.pending() == 0 and svc.logging_paused is None


def test_journal_keeps_the_rest_when_a_replay_fails(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    for i in range(3):
        j.append({"i": i})
    written = []

    def write(row):
        if row["i"] == 1:
            raise RuntimeError("database away again")
        written.append(row["i"])

    with pytest.raises(RuntimeError):
        j.replay(write)
    assert written == [0] and j.pending() == 2
    assert j.replay(lambda row: written.append(row["i"])) == 2
    assert written == [0, 1, 2] and j.pending() == 0


@pytest.fixture
def own_pg(tmp_path):
    """A PostgreSQL server of this test's own (stopped and started by the test)."""
    if not os.environ.get("COREA_TEST_PG_URL"):
        pytest.skip("no PostgreSQL server: set COREA_TEST_PG_URL "
                    "(eval \"$(bash scripts/test_postgres.sh start)\")")
    env = {**os.environ, "COREA_PG_DIR": f"/tmp/corea-pg-fault-{uuid.uuid4().hex[:8]}",
           "COREA_PG_PORT": str(55000 + os.getpid() % 900)}
    script = str(REPO / "scripts" / "test_postgres.sh")
    out = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip().split("=", 1)[1].strip("'")

    def ctl(what):
        r = subprocess.run(["bash", script, what], env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr

    try:
        yield url, ctl
    finally:
        ctl("stop")


def test_postgresql_server_stopped_mid_session(tmp_path, own_pg):
    url, ctl = own_pg
    svc = _service(tmp_path, url)
    h = AskHandlers(svc, roles=Roles(host="0.0.0.0", on_space=False))
    _ask(h, "before")
    ctl("pause")  # the server goes away
    for q in ("during 1", "during 2"):
        text = _texts(_ask(h, q))
        assert "**Small model's answer:** 4" in text and "Logging is paused" in text
    assert svc.journal.pending() == 2
    ctl("resume")
    _ask(h, "after")
    qs = [r["question"] for r in reversed(svc.store.list_interactions(limit=None))]
    assert qs == ["before", "during 1", "during 2", "after"] and svc.journal.pending() == 0
    svc.store.close()
