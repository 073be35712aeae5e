"""Tests of the interaction log (corea.store.storage): schema, ratings, filters, export, concurrency,
migrations and error handling. Every test uses its own SQLite file under tmp_path."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import threading
from datetime import datetime, timezone

import pytest
from alembic import command
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from corea.events import CascadeResult, DecisionInfo, ModelOutput, TierStep
from corea.store.storage import (EXPORT_FIELDS, MIGRATIONS_DIR, Base, StorageError, Store,
                                 alembic_config, open_store)
from corea.store.tiers import TIER_KEYS

SLM, LLM = "tiny-slm", "big-llm"


def _url(tmp_path, name="corea.sqlite"):
    return f"sqlite:///{tmp_path / name}"


def kept_result(question="What is 2+2?", confidence=0.9) -> CascadeResult:
    slm = ModelOutput(model=SLM, text="It is 4.\nConfidence: 90%", answer="4",
                      answer_method="free", confidence=confidence, confidence_method="free",
                      prompt_tokens=12, completion_tokens=7, latency_s=0.5, ttft_s=0.1,
                      finish_reason="stop", cost_usd=0.001)
    dec = DecisionInfo(defer=False, reason="confident", confidence=confidence, threshold=0.7,
                       message="Kept the small model's answer (90% ≥ 70%).")
    return CascadeResult(question=question, threshold=0.7, slm=slm, decision=dec,
                         final_answer="4", final_model=SLM, final_text=slm.text, latency_s=0.6,
                         cost_usd=0.001)


def deferred_result(question="Prove Fermat's last theorem") -> CascadeResult:
    slm = ModelOutput(model=SLM, text="Hmm. Answer: no idea", answer="no idea",
                      answer_method="forced", confidence=None, confidence_method=None,
                      confidence_note="not a number: high", prompt_tokens=20,
                      completion_tokens=9, latency_s=0.4, finish_reason="stop",
                      cost_usd=0.002, error=None)
    llm = ModelOutput(model=LLM, text="Wiles, 1995. Answer: see Wiles", answer="see Wiles",
                      answer_method="free", prompt_tokens=30, completion_tokens=40,
                      latency_s=2.5, ttft_s=0.3, finish_reason="stop", cost_usd=0.02,
                      error="partial: stream cut")
    dec = DecisionInfo(defer=True, reason="no_confidence", confidence=None, threshold=0.8,
                       message="Deferred: no confidence was given.")
    return CascadeResult(question=question, threshold=0.8, slm=slm, llm=llm, decision=dec,
                         final_answer="see Wiles", final_model=LLM, final_text=llm.text,
                         latency_s=3.0, cost_usd=0.022, status="ok",
                         warnings=["LLM answered slowly"])


@pytest.fixture
def store(db_url):
    """An open store on a fresh database: SQLite, and PostgreSQL when a server is configured
    (``db_url`` in conftest.py)."""
    s = Store(db_url)
    yield s
    s.close()


# ------------------------------------------------------------------------------------ round trip


def test_log_and_read_back_every_field(store):
    r = kept_result()
    rid = store.log_interaction(r, "sess-A")
    assert r.interaction_id == rid and isinstance(rid, int)
    d = store.get_interaction(rid)
    expected = dict(
        id=rid, session_id="sess-A", question="What is 2+2?", threshold=0.7, status="ok",
        slm_model=SLM, slm_output="It is 4.\nConfidence: 90%", slm_answer="4",
        slm_answer_method="free", confidence=0.9, confidence_method="free", confidence_note=None,
        decision_defer=False, decision_reason="confident",
        decision_message="Kept the small model's answer (90% ≥ 70%).", llm_model=None,
        llm_output=None, llm_answer=None, final_answer="4", final_model=SLM,
        slm_prompt_tokens=12, slm_completion_tokens=7, llm_prompt_tokens=None,
        llm_completion_tokens=None, slm_latency_s=0.5, llm_latency_s=None, latency_s=0.6,
        cost_usd=0.001, errors=[], rating_thumbs=None, rating_correction=None,
        rating_comment=None)
    for k, v in expected.items():
        assert d[k] == v, k
    assert d["created_at"].tzinfo == timezone.utc
    assert abs((datetime.now(timezone.utc) - d["created_at"]).total_seconds()) < 60
    assert d["extra"]["slm_ttft_s"] == 0.1 and d["extra"]["slm_finish_reason"] == "stop"

    r2 = deferred_result()
    rid2 = store.log_interaction(r2, "sess-B", extra={"judge": "x"})
    d2 = store.get_interaction(rid2)
    assert rid2 == rid + 1
    assert (d2["decision_defer"], d2["decision_reason"]) == (True, "no_confidence")
    assert d2["confidence"] is None and d2["confidence_note"] == "not a number: high"
    assert d2["slm_answer_method"] == "forced"
    assert (d2["llm_model"], d2["llm_output"], d2["llm_answer"]) == (
        LLM, "Wiles, 1995. Answer: see Wiles", "see Wiles")
    assert (d2["llm_prompt_tokens"], d2["llm_completion_tokens"], d2["llm_latency_s"]) == (
        30, 40, 2.5)
    assert (d2["final_model"], d2["cost_usd"], d2["threshold"]) == (LLM, 0.022, 0.8)
    assert d2["errors"] == ["llm error: partial: stream cut", "LLM answered slowly"]
    assert d2["extra"]["judge"] == "x" and d2["extra"]["llm_ttft_s"] == 0.3
    assert store.get_interaction(9999) is None
    assert store.count() == 2


def test_cancelled_run_without_decision_is_logged(store):
    r = CascadeResult(question="q?", threshold=0.5,
                      slm=ModelOutput(model=SLM, text="partial", finish_reason="cancelled"),
                      status="cancelled")
    d = store.get_interaction(store.log_interaction(r, "s"))
    assert d["status"] == "cancelled" and d["decision_defer"] is False
    assert d["decision_reason"] is None and d["final_answer"] is None


# -------------------------------------------------------------------------------------- ratings


def test_ratings_tied_to_id_latest_wins(store):
    a = store.log_interaction(kept_result("a"), "s")
    b = store.log_interaction(kept_result("b"), "s")
    r1 = store.add_rating(a, thumbs="down", correction="5", comment="wrong")
    r2 = store.add_rating(a, thumbs="up")
    assert r2 > r1
    da, db_ = store.get_interaction(a), store.get_interaction(b)
    assert (da["rating_thumbs"], da["rating_correction"], da["rating_comment"]) == (
        "up", None, None)
    assert db_["rating_thumbs"] is None
    store.add_rating(b, correction="four", comment="  ")  # blank comment stored as None
    db_ = store.get_interaction(b)
    assert (db_["rating_thumbs"], db_["rating_correction"], db_["rating_comment"]) == (
        None, "four", None)


@pytest.mark.parametrize("kwargs", [
    dict(thumbs="meh"), dict(thumbs="UP"), dict(), dict(correction="", comment="   "),
])
def test_bad_rating_args(store, kwargs):
    rid = store.log_interaction(kept_result(), "s")
    with pytest.raises(ValueError):
        store.add_rating(rid, **kwargs)


def test_rating_unknown_interaction(store):
    with pytest.raises(ValueError, match="no interaction with id 42"):
        store.add_rating(42, thumbs="up")


# -------------------------------------------------------------------------------------- filters


def test_list_filters(store):
    k1 = store.log_interaction(kept_result("k1"), "s")
    d1 = store.log_interaction(deferred_result("d1"), "s")
    k2 = store.log_interaction(kept_result("k2"), "s")
    store.add_rating(d1, thumbs="up")
    ids = lambda rows: [r["id"] for r in rows]  # noqa: E731
    assert ids(store.list_interactions()) == [k2, d1, k1]  # newest first
    assert ids(store.list_interactions(limit=2)) == [k2, d1]
    assert ids(store.list_interactions(rated=True)) == [d1]
    assert ids(store.list_interactions(rated=False)) == [k2, k1]
    assert ids(store.list_interactions(deferred=True)) == [d1]
    assert ids(store.list_interactions(deferred=False)) == [k2, k1]
    assert ids(store.list_interactions(model=LLM)) == [d1]
    assert ids(store.list_interactions(model=SLM)) == [k2, d1, k1]
    assert ids(store.list_interactions(model="nope")) == []
    assert ids(store.list_interactions(rated=False, deferred=True)) == []
    assert store.list_interactions(rated=True)[0]["rating_thumbs"] == "up"
    # "contains", case-insensitive; % and _ are literal characters, not wildcards
    assert ids(store.list_interactions(model="BIG")) == [d1]
    assert ids(store.list_interactions(model="slm")) == [k2, d1, k1]
    assert ids(store.list_interactions(model="tiny%")) == []
    assert ids(store.list_interactions(model="y_s")) == []
    # a turn cancelled before its decision is neither kept nor deferred
    c = store.log_interaction(CascadeResult(question="q?", threshold=0.5, status="cancelled",
                                            slm=ModelOutput(model=SLM, text="part")), "s")
    assert c not in ids(store.list_interactions(deferred=False))
    assert c not in ids(store.list_interactions(deferred=True))
    assert c in ids(store.list_interactions())
    with pytest.raises(ValueError):
        store.list_interactions(limit=-1)


# --------------------------------------------------------------------------------------- export


def test_export_rated_jsonl(store, tmp_path):
    a = store.log_interaction(kept_result("a"), "s")
    store.log_interaction(kept_result("unrated"), "s")
    b = store.log_interaction(deferred_result("b — ünïcode"), "s")
    store.add_rating(a, thumbs="down")
    store.add_rating(a, thumbs="down", correction="5", comment="off by one")
    store.add_rating(b, thumbs="up")
    path = tmp_path / "out.jsonl"
    assert store.export_rated_jsonl(path) == 2
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert [tuple(x) for x in lines] == [EXPORT_FIELDS, EXPORT_FIELDS]
    la, lb = lines
    assert la["id"] == a and la["question"] == "a" and la["slm_answer"] == "4"
    assert (la["rating_thumbs"], la["rating_correction"], la["rating_comment"]) == (
        "down", "5", "off by one")
    assert la["llm_answer"] is None and la["decision_defer"] is False
    assert la["decision_reason"] == "confident" and la["confidence"] == 0.9
    assert datetime.fromisoformat(la["created_at"]).tzinfo is not None
    assert lb["question"] == "b — ünïcode" and lb["llm_output"].startswith("Wiles")
    assert (lb["final_model"], lb["decision_defer"], lb["threshold"]) == (LLM, True, 0.8)
    assert [t["model"] for t in lb["tiers"]] == [SLM, LLM]  # every tier of the turn
    assert lb["tiers"][1]["output"].startswith("Wiles") and lb["tiers"][1]["answered"]
    buf = io.StringIO()
    assert store.export_rated_jsonl(buf) == 2
    assert [json.loads(x) for x in buf.getvalue().splitlines()] == lines


# ---------------------------------------------------------------------------------- concurrency


def test_concurrent_logging_8_threads(store):
    n_threads, n_rows = 8, 25
    errors, ids = [], [[] for _ in range(n_threads)]
    start = threading.Barrier(n_threads)

    def worker(t):
        try:
            start.wait()
            for i in range(n_rows):
                r = kept_result(question=f"q-{t}-{i}")
                ids[t].append(store.log_interaction(r, f"s{t}"))
                assert r.interaction_id == ids[t][-1]
                if i % 10 == 0:
                    store.add_rating(ids[t][-1], thumbs="up")
                    store.list_interactions(limit=5)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert store.count() == n_threads * n_rows
    all_ids = [i for per in ids for i in per]
    assert len(set(all_ids)) == len(all_ids)
    rows = store.list_interactions(limit=None)
    assert len(rows) == n_threads * n_rows
    for row in rows:
        t = row["session_id"][1:]
        assert row["question"].startswith(f"q-{t}-")
    by_id = {row["id"]: row["question"] for row in rows}
    for t in range(n_threads):
        assert [by_id[i] for i in ids[t]] == [f"q-{t}-{i}" for i in range(n_rows)]
    assert len(store.list_interactions(rated=True, limit=None)) == n_threads * 3


# ----------------------------------------------------------------------------------- migrations


def _revision(url):
    eng = create_engine(url)
    with eng.connect() as c:
        rev = MigrationContext.configure(c).get_current_revision()
    eng.dispose()
    return rev


def test_reopen_keeps_rows(tmp_path):
    url = _url(tmp_path)
    s = Store(url)
    rid = s.log_interaction(kept_result("persist me"), "s")
    s.add_rating(rid, thumbs="up")
    s.close()
    for _ in range(2):  # upgrade head on an up-to-date DB is a no-op
        s = Store(url)
        assert s.count() == 1
        d = s.get_interaction(rid)
        assert d["question"] == "persist me" and d["rating_thumbs"] == "up"
        s.close()
    assert _revision(url) == "0004"
    conn = sqlite3.connect(tmp_path / "corea.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_training_runs_at_0002_become_jobs(tmp_path):
    url = _url(tmp_path)
    command.upgrade(alembic_config(url), "0002")
    conn = sqlite3.connect(tmp_path / "corea.sqlite")
    conn.execute("INSERT INTO training_runs (id, created_at, recipe, config, status, output_dir,"
                 " checkpoints, final_metrics) VALUES (3, '2026-11-30 10:00:00', 'cpu-smoke',"
                 " '{}', 'completed', '/tmp/x', '[]', '{}')")
    conn.commit()
    conn.close()
    s = Store(url)  # upgraded to the packaged head
    job = s.get_job(3)
    assert job["kind"] == "train" and job["name"] == "cpu-smoke" and job["status"] == "completed"
    new = s.add_job("evaluate", "gsm8k-test-5-x", {"n_items": 5}, "/tmp/y", None)
    assert [j["id"] for j in s.list_jobs(kind="evaluate")] == [new]
    assert [j["id"] for j in s.list_jobs()] == [new, 3]
    s.close()
    command.downgrade(alembic_config(url), "0002")  # and back: evaluation jobs are dropped
    conn = sqlite3.connect(tmp_path / "corea.sqlite")
    assert conn.execute("SELECT id, recipe FROM training_runs").fetchall() == [(3, "cpu-smoke")]
    conn.close()


def test_models_match_migrations(store):
    from alembic.autogenerate import compare_metadata

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_db_at_0001_then_upgraded_keeps_rows(tmp_path):
    """A DB created by revision 0001 is upgraded (here through an extra test-only revision
    that rebuilds the interactions table) without losing rows or ratings."""
    url = _url(tmp_path)
    command.upgrade(alembic_config(url), "0001")
    assert _revision(url) == "0001"
    conn = sqlite3.connect(tmp_path / "corea.sqlite")
    conn.execute(
        "INSERT INTO interactions (id, created_at, session_id, question, threshold, status,"
        " slm_model, slm_output, decision_defer, slm_prompt_tokens, slm_completion_tokens,"
        " slm_latency_s, latency_s, cost_usd, errors, extra) VALUES (7, '2024-01-02 03:04:05',"
        " 'old', 'old question', 0.7, 'ok', 'm', 'out', 0, 1, 2, 0.1, 0.2, 0.0, '[]', '{}')")
    conn.execute("INSERT INTO ratings (interaction_id, created_at, thumbs) "
                 "VALUES (7, '2024-01-02 03:05:00', 'down')")
    conn.commit()
    conn.close()

    s = Store(url)  # upgrade to the packaged head
    d = s.get_interaction(7)
    assert d["question"] == "old question" and d["rating_thumbs"] == "down"
    assert d["created_at"] == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    new = s.log_interaction(kept_result("new"), "s")
    assert new == 8 and s.count() == 2
    s.close()

    # A future revision that changes the schema (batch = SQLite table rebuild).
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "0005_test.py").write_text(
        'import sqlalchemy as sa\nfrom alembic import op\n'
        'revision = "0005"\ndown_revision = "0004"\nbranch_labels = None\ndepends_on = None\n'
        'def upgrade():\n'
        '    with op.batch_alter_table("interactions", recreate="always") as b:\n'
        '        b.add_column(sa.Column("judge_score", sa.Float(), nullable=True))\n'
        'def downgrade():\n'
        '    with op.batch_alter_table("interactions") as b:\n'
        '        b.drop_column("judge_score")\n')
    cfg = alembic_config(url)
    cfg.set_main_option("script_location", str(scripts))
    command.upgrade(cfg, "head")
    assert _revision(url) == "0005"
    conn = sqlite3.connect(tmp_path / "corea.sqlite")
    rows = conn.execute("SELECT id, question, judge_score FROM interactions ORDER BY id").fetchall()
    assert rows == [(7, "old question", None), (8, "new", None)]
    assert conn.execute("SELECT interaction_id, thumbs FROM ratings").fetchall() == [(7, "down")]
    conn.close()

    # This COREA doesn't know revision 0005: a clear error, not a crash or data loss.
    with pytest.raises(StorageError, match="newer COREA"):
        Store(url)


# ------------------------------------------------------------------------------------- errors


def test_corrupt_file(tmp_path):
    bad = tmp_path / "db" / "corea.sqlite"
    bad.parent.mkdir()
    bad.write_text("this is not a database\n" * 200)
    with pytest.raises(StorageError, match="not a valid SQLite database") as ei:
        Store(f"sqlite:///{bad}")
    assert str(bad) in str(ei.value) and "COREA_DB_URL" in str(ei.value)
    assert bad.read_text().startswith("this is not")  # left untouched
    store, msg = open_store(f"sqlite:///{bad}")
    assert store is None and "not a valid SQLite database" in msg


def test_read_only_database(tmp_path):
    url = _url(tmp_path)
    s = Store(url)
    s.log_interaction(kept_result(), "s")
    s.close()
    # Tests run as root, where chmod does not block writes: open the file read-only instead.
    ro = f"sqlite:///file:{tmp_path / 'corea.sqlite'}?mode=ro&uri=true"
    with pytest.raises(StorageError, match="read-only") as ei:
        Store(ro)
    assert str(tmp_path / "corea.sqlite") in str(ei.value)


def test_unopenable_paths(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot create the folder"):
        Store(f"sqlite:///{blocker}/sub/corea.sqlite")
    with pytest.raises(StorageError, match="is a folder"):
        Store(f"sqlite:///{tmp_path}")
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(StorageError, match="cannot open"):
        Store(f"sqlite:///file:{missing}?mode=ro&uri=true")
    with pytest.raises(StorageError, match="invalid database URL"):
        Store("not a url")


def test_open_store_ok_and_parent_created(tmp_path):
    store, msg = open_store(_url(tmp_path, "nested/deeper/log.sqlite"))
    assert msg is None and store is not None
    assert (tmp_path / "nested" / "deeper" / "log.sqlite").is_file()
    store.close()


def test_in_memory_store():
    with Store("sqlite://") as s:
        rid = s.log_interaction(kept_result(), "s")
        assert s.get_interaction(rid)["question"] == "What is 2+2?"


def test_a_thumbs_up_with_a_different_correction_is_refused(store):
    rid = store.log_interaction(kept_result(), "s")  # final answer "4"
    with pytest.raises(ValueError, match="send 👎 with the correction"):
        store.add_rating(rid, thumbs="up", correction="5")
    store.add_rating(rid, thumbs="up", correction="4.0")   # the same answer: fine
    store.add_rating(rid, thumbs="down", correction="5")   # a correction with 👎: fine
    assert store.rating_count(rid) == 2
    assert store.get_interaction(rid)["rating_thumbs"] == "down"  # the latest counts


# ----------------------------------------------------------------------------------- tier rows


def three_tier_result() -> CascadeResult:
    """Tier 0 defers, the middle tier defers, the last one answers."""
    t0 = ModelOutput(model=SLM, text="maybe 3\nConfidence: 0.2", answer="3", answer_method="free",
                     confidence=0.2, confidence_method="free", prompt_tokens=10,
                     completion_tokens=5, latency_s=0.3, ttft_s=0.05, finish_reason="stop",
                     cost_usd=0.001, signals={"solution_prob": 0.4})
    t1 = ModelOutput(model="mid-model", text="4, I think\nConfidence: 0.5", answer="4",
                     answer_method="free", confidence=0.5, confidence_method="free",
                     prompt_tokens=11, completion_tokens=6, latency_s=0.7, ttft_s=0.1,
                     finish_reason="stop", cost_usd=0.004)
    t2 = ModelOutput(model=LLM, text="It is 5.", answer="5", answer_method="free",
                     prompt_tokens=12, completion_tokens=7, latency_s=1.5, ttft_s=0.2,
                     finish_reason="stop", cost_usd=0.02)
    d0 = DecisionInfo(defer=True, reason="low_confidence", confidence=0.35, threshold=0.7,
                      message="Deferred (35% < 70%).", signal="tokprob", verbal_confidence=0.2)
    d1 = DecisionInfo(defer=True, reason="low_confidence", confidence=0.5, threshold=0.6,
                      message="Deferred (50% < 60%).")
    steps = [TierStep(0, "slm", SLM, t0, 0.7, d0), TierStep(1, "mid", "mid-model", t1, 0.6, d1),
             TierStep(2, "llm", LLM, t2, None, None, answered=True)]
    return CascadeResult(question="2+3?",
                         final_answer="5", final_model=LLM, final_text=t2.text, latency_s=2.6,
                         cost_usd=0.025, tiers=steps, answered_tier=2)


def test_every_tier_has_a_row(store):
    kept = store.log_interaction(kept_result(), "s")
    three = store.log_interaction(three_tier_result(), "s")
    (t0,) = store.get_interaction(kept)["tiers"]  # a two-tier turn kept by the SLM: one tier
    assert (t0["index"], t0["role"], t0["model"], t0["answered"]) == (0, "slm", SLM, True)
    assert (t0["decision"], t0["reason"], t0["threshold"], t0["stated_confidence"]) == (
        "kept", "confident", 0.7, 0.9)
    assert (t0["prompt_tokens"], t0["completion_tokens"], t0["ttft_s"], t0["cost_usd"]) == (
        12, 7, 0.1, 0.001)
    row = store.get_interaction(three)
    tiers = row["tiers"]
    assert [tuple(t) for t in tiers] == [TIER_KEYS] * 3
    assert [(t["index"], t["role"], t["model"], t["answered"], t["decision"]) for t in tiers] == [
        (0, "slm", SLM, False, "deferred"), (1, "mid", "mid-model", False, "deferred"),
        (2, "llm", LLM, True, None)]
    mid = tiers[1]
    assert mid["output"] == "4, I think\nConfidence: 0.5" and mid["answer"] == "4"
    assert (mid["threshold"], mid["signal_value"], mid["cost_usd"], mid["latency_s"]) == (
        0.6, 0.5, 0.004, 0.7)
    assert tiers[0]["signal"] == "tokprob" and tiers[0]["signal_value"] == 0.35
    assert tiers[0]["extra"]["signals"] == {"solution_prob": 0.4}
    assert tiers[0]["extra"]["decision_verbal_confidence"] == 0.2
    assert "tiers" not in row["extra"]  # the middle tier is in its own row, not only in JSON
    # the two-tier columns still describe the first and the last tier
    assert (row["slm_model"], row["llm_model"], row["final_model"]) == (SLM, LLM, LLM)
    # the model filter finds a middle tier's model; reads of many rows carry their tiers
    assert [r["id"] for r in store.list_interactions(model="MID-")] == [three]
    assert [len(r["tiers"]) for r in store.list_interactions()] == [3, 1]


def test_a_journaled_row_is_written_once(store):
    values = Store.interaction_row(three_tier_result(), "s")
    first = store.log_row(values, keep_time=True, key="k-1")
    assert store.log_row(values, keep_time=True, key="k-1") == first  # replayed again
    assert store.count() == 1 and store.id_for_key("k-1") == first
    assert len(store.get_interaction(first)["tiers"]) == 3
    assert store.id_for_key("nope") is None
    rid = store.add_rating(first, thumbs="down", key="r-1", created_at="2026-01-02T03:04:05+00:00")
    assert store.add_rating(first, thumbs="down", key="r-1") == rid
    assert store.rating_count(first) == 1
    # a journal of an older version: no tiers in the values, rebuilt from the columns
    old = Store.interaction_row(deferred_result(), "s")
    del old["tiers"]
    tiers = store.get_interaction(store.log_row(old))["tiers"]
    assert [(t["role"], t["model"], t["answered"]) for t in tiers] == [
        ("slm", SLM, False), ("llm", LLM, True)]
