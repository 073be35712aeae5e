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


# --------------------------------------------------------------- a database down at start-up


def _rate(h, iid, thumbs="up", session="s", comment=""):
    return h.rate(thumbs, iid, "", comment, SimpleNamespace(session_hash=session))


def test_sqlite_unavailable_at_start_journals_and_replays_once(tmp_path):
    blocker = tmp_path / "db"
    blocker.write_text("a file where the database folder belongs")
    svc = _service(tmp_path, f"sqlite:///{blocker / 'log.sqlite'}")
    svc.logbook.reopen_every_s = 0.0  # try the database on every turn, rating and status
    assert svc.store is None and "cannot create the folder" in svc.logging_error
    h = AskHandlers(svc, roles=Roles(host="0.0.0.0", on_space=False))
    out = _ask(h, "first", "v")
    assert "**Small model's answer:** 4" in _texts(out)
    assert "Logging is paused" in _texts(out) and str(tmp_path) not in _texts(out)
    (first, _), = out[4]  # the turn's provisional id, offered for rating
    assert first < 0
    _ask(h, "second", "w")
    assert _rate(h, first, "down", "v", comment="wrong").startswith("Kept rating 👎")
    assert _rate(h, first, "up", "w").startswith("⚠️ no interaction")  # not w's turn
    status = svc.log_status()
    assert (status.state, status.turns_waiting, status.ratings_waiting) == ("offline", 2, 1)
    assert status.message() == ("The log is offline: 2 turns and 1 rating waiting; they will "
                                "be saved when it returns.")
    assert str(blocker) in status.message(owner=True) and str(blocker) not in status.message()
    assert h.log_status(SimpleNamespace(session_hash="v")).startswith("🗄️ The log is offline")

    blocker.unlink()  # the database's folder can be made now
    status = svc.log_status()  # what the page polls: opens the database and replays
    assert (status.state, status.turns_waiting, status.ratings_waiting) == ("on", 0, 0)
    assert status.message() == "" and h.log_status(None) == ""
    rows = svc.store.list_interactions(limit=None)
    assert [(r["question"], r["session_id"]) for r in reversed(rows)] == [("first", "v"),
                                                                         ("second", "w")]
    by_q = {r["question"]: r for r in rows}
    assert (by_q["first"]["rating_thumbs"], by_q["first"]["rating_comment"]) == ("down", "wrong")
    assert by_q["second"]["rating_thumbs"] is None
    assert [t["role"] for t in by_q["first"]["tiers"]] == ["slm"]
    # the provisional id still rates the turn, now on its real row
    assert _rate(h, first, "up", "v").startswith(f"Saved rating 👍")
    assert svc.store.rating_count(by_q["first"]["id"]) == 2
    out = _ask(h, "third", "v")
    assert "Logging is paused" not in _texts(out) and out[4][0][0] == 3
    assert svc.store.count() == 3


def test_a_replay_run_twice_writes_every_row_once(tmp_path):
    """A replay cut off after its writes but before the journal was emptied (a crash, a second
    process replaying the same file) writes nothing twice."""
    blocker = tmp_path / "db"
    blocker.write_text("x")
    svc = _service(tmp_path, f"sqlite:///{blocker / 'log.sqlite'}")
    svc.logbook.reopen_every_s = 0.0
    finals = [list(svc.ask(q, session_id="s"))[-1].result for q in ("a", "b")]
    assert svc.rate(finals[1].interaction_id, "up", session_id="s") < 0  # rated while waiting
    saved = svc.journal.path.read_text()
    assert len(saved.splitlines()) == 3
    blocker.unlink()
    assert svc.log_status().state == "on" and svc.journal.pending() == 0
    svc.journal.path.write_text(saved)  # the same entries again
    assert svc.replay_journal() == 3
    assert svc.store.count() == 2 and svc.journal.pending() == 0
    rows = svc.store.list_interactions(limit=None, rated=True)
    assert [r["question"] for r in rows] == ["b"] and svc.store.rating_count(rows[0]["id"]) == 1
    # a rating whose turn the log refuses is dropped, not retried forever
    svc.journal.append({"kind": "rating", "key": "r-x", "interaction_id": 999, "thumbs": "up",
                        "session_id": None})
    assert svc.replay_journal() == 1 and svc.journal.pending() == 0


def test_two_processes_share_the_journal_and_each_row_arrives_once(tmp_path):
    """Two services (as two app processes on one machine) on one database and one journal, both
    started while it is unavailable. When it appears each one replays; a copy of the journal put
    back (a replay cut off before the file was emptied) is replayed by both at once: every turn
    and rating is written once, in order."""
    import threading

    blocker = tmp_path / "db"
    blocker.write_text("x")
    url = f"sqlite:///{blocker / 'log.sqlite'}"
    a, b = _service(tmp_path, url), _service(tmp_path, url)
    assert a.journal.path == b.journal.path
    for svc in (a, b):
        svc.logbook.reopen_every_s = 0.0
    for i in range(6):
        svc = (a, b)[i % 2]
        r = list(svc.ask(f"q{i}", session_id=f"s{i}"))[-1].result
        svc.rate(r.interaction_id, "down", comment=f"c{i}", session_id=f"s{i}")
    assert a.log_status().turns_waiting == 6 and b.log_status().ratings_waiting == 6
    saved = a.journal.path.read_text()
    blocker.unlink()
    assert a.log_status().state == "on" and b.log_status().state == "on"
    a.journal.path.write_text(saved)
    start = threading.Barrier(2)
    done = []

    def replay(svc):
        start.wait()
        done.append(svc.replay_journal())

    threads = [threading.Thread(target=replay, args=(svc,)) for svc in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(done) == [0, 12]  # one took the file, the other found it empty
    rows = list(reversed(a.store.list_interactions(limit=None)))
    assert [(r["question"], r["rating_comment"]) for r in rows] == [
        (f"q{i}", f"c{i}") for i in range(6)]
    assert sum(a.store.rating_count(r["id"]) for r in rows) == 6
    assert b.store.count() == 6 and a.journal.pending() == 0


def test_sqlite_file_locked_at_start_then_released(tmp_path, monkeypatch):
    """A database file another program holds locked while the app starts (the start-up check
    cannot write): journaled, then replayed once the lock is gone."""
    import sqlite3

    import corea.store.storage as storage

    path = tmp_path / "log.sqlite"
    storage.Store(f"sqlite:///{path}").close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(storage, "BUSY_TIMEOUT_MS", 50)  # give up on the lock at once
    svc = _service(tmp_path, f"sqlite:///{path}")
    assert svc.store is None and "locked" in svc.logging_error
    svc.logbook.reopen_every_s = 3600.0  # not again before the test says so
    list(svc.ask("while locked", session_id="s"))
    assert svc.journal.pending() == 1 and svc.log_status().state == "offline"
    holder.execute("ROLLBACK")
    holder.close()
    svc.logbook.reopen_every_s = 0.0
    assert svc.log_status().state == "on" and svc.journal.pending() == 0
    assert [r["question"] for r in svc.store.list_interactions()] == ["while locked"]


def test_postgresql_down_at_start_every_turn_and_rating_arrives_once(tmp_path, own_pg):
    url, ctl = own_pg
    ctl("pause")  # the server is down before the app starts
    svc = _service(tmp_path, url)
    svc.logbook.reopen_every_s = 0.0
    assert svc.store is None and svc.logging_error
    h = AskHandlers(svc, roles=Roles(host="0.0.0.0", on_space=False))
    ids = {}
    for q, who in (("during 1", "a"), ("during 2", "b"), ("during 3", "a")):
        out = _ask(h, q, who)
        assert "**Small model's answer:** 4" in _texts(out) and "Logging is paused" in _texts(out)
        ids[q] = out[4][-1][0]
    assert _rate(h, ids["during 1"], "up", "a").startswith("Kept rating 👍")
    assert _rate(h, ids["during 2"], "down", "b", comment="no").startswith("Kept rating 👎")
    assert svc.log_status().message() == ("The log is offline: 3 turns and 2 ratings waiting; "
                                          "they will be saved when it returns.")
    ctl("resume")
    assert svc.log_status().state == "on"  # the page's poll: opens, replays
    assert svc.log_status().state == "on"  # and again: nothing written twice
    _ask(h, "after", "a")
    rows = list(reversed(svc.store.list_interactions(limit=None)))
    assert [(r["question"], r["session_id"]) for r in rows] == [
        ("during 1", "a"), ("during 2", "b"), ("during 3", "a"), ("after", "a")]
    assert [(r["rating_thumbs"], r["rating_comment"]) for r in rows] == [
        ("up", None), ("down", "no"), (None, None), (None, None)]
    assert [sum(svc.store.rating_count(r["id"]) for r in rows)] == [2]
    assert all(r["tiers"] and r["tiers"][0]["model"] == "slm" for r in rows)
    assert svc.journal.pending() == 0
    svc.store.close()


def test_the_api_rates_a_turn_asked_while_the_log_was_down(tmp_path, monkeypatch):
    import sys

    from fastapi.testclient import TestClient

    from corea.api import ApiSettings, create_api

    sys.path.insert(0, str(REPO / "tests" / "helpers"))
    from api_server import scripted_service

    monkeypatch.setenv("COREA_CACHE_DIR", str(tmp_path / "cache"))  # the journal's place
    blocker = tmp_path / "db"
    blocker.write_text("x")
    svc = scripted_service(f"sqlite:///{blocker / 'log.sqlite'}")
    svc.logbook.reopen_every_s = 0.0
    c = TestClient(create_api(svc, ApiSettings(keys="sk-test-0123456789,other=sk-other")))
    me, other = ({"Authorization": f"Bearer {k}"} for k in ("sk-test-0123456789", "sk-other"))
    body = c.post("/v1/chat/completions", headers=me,
                  json={"model": "corea", "messages": [{"role": "user", "content": "2+2?"}]})
    iid = body.json()["corea"]["interaction_id"]
    assert body.status_code == 200 and iid < 0  # waiting in the journal
    r = c.post("/v1/corea/ratings", headers=other, json={"interaction_id": iid, "thumbs": "up"})
    assert r.status_code == 404  # another key's turn, journaled or not
    r = c.post("/v1/corea/ratings", headers=me, json={"interaction_id": iid, "thumbs": "down",
                                                      "correction": "5"})
    assert r.status_code == 200 and r.json()["id"] < 0
    blocker.unlink()
    assert svc.log_status().state == "on"
    (row,) = svc.store.list_interactions()
    assert (row["question"], row["rating_thumbs"], row["rating_correction"]) == ("2+2?", "down",
                                                                                "5")


@pytest.mark.browser
def test_the_page_says_the_log_is_offline_and_when_it_is_back(tmp_path):
    """In a real browser: a database that cannot be opened at start-up; the page shows the
    waiting turn, the turn is rated by its provisional id, and once the database can be made the
    rating's status refresh writes both and the line goes away."""
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    chromium = os.environ.get("COREA_CHROMIUM", "/usr/bin/chromium")
    if not (os.path.exists(chromium) or shutil.which(chromium)):
        pytest.skip(f"Chromium not found at {chromium}")
    import socket

    import app

    blocker = tmp_path / "db"
    blocker.write_text("x")
    svc = _service(tmp_path, f"sqlite:///{blocker / 'log.sqlite'}")
    svc.logbook.reopen_every_s = 0.0
    demo = app.build_demo(svc, roles=Roles(token="an-owner-token"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
                box = page.locator("#corea-question textarea")
                box.wait_for(timeout=60_000)
                box.fill("What is 2 + 2?")
                page.locator("#corea-send").click()
                status = page.locator("#corea-log-status")
                sync_api.expect(status).to_contain_text(
                    "The log is offline: 1 turn waiting; they will be saved when it returns.",
                    timeout=60_000)
                assert str(tmp_path) not in page.content()  # a visitor sees no path
                sync_api.expect(page.locator("#corea-details")).to_contain_text(
                    "waiting in the journal as #-")
                blocker.unlink()  # the database can be opened now
                page.locator("#corea-thumbs-up").click()
                sync_api.expect(page.locator("#corea-rating-status")).to_contain_text(
                    "Saved rating 👍", timeout=30_000)
                sync_api.expect(status).not_to_contain_text("offline", timeout=30_000)
            finally:
                browser.close()
    finally:
        demo.close()
    (row,) = svc.store.list_interactions()
    assert (row["question"], row["rating_thumbs"]) == ("What is 2 + 2?", "up")
