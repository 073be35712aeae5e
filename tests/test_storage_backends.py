"""The log on both databases it supports: SQLite and PostgreSQL (``db_url`` in conftest.py; the
PostgreSQL cases skip without ``COREA_TEST_PG_URL``). Schema migrations up and down with rows in
the tables, a newer schema refused, and two processes writing one database at once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from corea.store.storage import StorageError, Store, alembic_config


def _exec(url, *sql, params=None):
    eng = create_engine(url)
    try:
        out = []
        with eng.begin() as c:
            for s in sql:
                res = c.execute(text(s), params or {})
                out.append(res.fetchall() if res.returns_rows else None)
        return out
    finally:
        eng.dispose()


def test_migrations_up_and_down_keep_rows(db_url):
    cfg = alembic_config(db_url)
    command.upgrade(cfg, "0001")
    _exec(db_url,
          "INSERT INTO interactions (created_at, session_id, question, threshold, status,"
          " slm_model, slm_output, decision_defer, slm_prompt_tokens, slm_completion_tokens,"
          " slm_latency_s, latency_s, cost_usd, errors, extra) VALUES ('2024-01-02 03:04:05',"
          " 'old', 'old question', 0.7, 'ok', 'm', 'out', false, 1, 2, 0.1, 0.2, 0.0, '[]', '{}')")
    (iid,), = _exec(db_url, "SELECT id FROM interactions")[0]
    _exec(db_url, "INSERT INTO ratings (interaction_id, created_at, thumbs) "
                  "VALUES (:i, '2024-01-02 03:05:00', 'down')", params={"i": iid})
    command.upgrade(cfg, "0002")
    _exec(db_url, "INSERT INTO training_runs (created_at, recipe, config, status, output_dir,"
                  " checkpoints, final_metrics) VALUES ('2024-01-03 00:00:00', 'cpu-smoke', '{}',"
                  " 'completed', 'runs/train/0001', '[]', '{}')")
    with Store(db_url) as s:  # to the packaged head (0003: training runs become jobs)
        d = s.get_interaction(iid)
        assert d["question"] == "old question" and d["rating_thumbs"] == "down"
        (job,) = s.list_jobs()
        assert (job["kind"], job["name"], job["status"]) == ("train", "cpu-smoke", "completed")
        jid = s.add_job("evaluate", "gsm8k-test-5-x", {}, "runs/x", None)
        assert jid != job["id"]
    # all the way down and up again: the schema round-trips on this backend
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")
    with Store(db_url) as s:
        assert s.count() == 0 and s.list_jobs() == []


def test_a_newer_schema_is_refused_with_a_clear_message(db_url):
    Store(db_url).close()
    _exec(db_url, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(StorageError, match="newer COREA"):
        Store(db_url)


WRITER = textwrap.dedent("""
    import json, sys
    from corea.events import CascadeResult, ModelOutput
    from corea.store.storage import Store

    url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = Store(url)
    ids = []
    for i in range(n):
        r = CascadeResult(question=f"{name}-{i}", threshold=0.7,
                          slm=ModelOutput(model="m", text="t", answer=str(i)),
                          final_answer=str(i), final_model="m", status="ok")
        rid = s.log_interaction(r, name)
        s.add_rating(rid, thumbs="up", comment=f"{name}-{i}", session_id=name)
        ids.append(rid)
    print(json.dumps(ids))
""")


def test_two_processes_write_one_database(db_url):
    Store(db_url).close()  # create the schema once
    n = 40
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, db_url, name, str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("p1", "p2")]
    ids = {}
    for name, p in zip(("p1", "p2"), procs):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        ids[name] = json.loads(out.strip().splitlines()[-1])
    with Store(db_url) as s:
        rows = s.list_interactions(limit=None)
        assert len(rows) == 2 * n and len({r["id"] for r in rows}) == 2 * n
        for name in ids:
            for i, rid in enumerate(ids[name]):
                d = s.get_interaction(rid)
                assert (d["session_id"], d["question"]) == (name, f"{name}-{i}")
                assert d["rating_comment"] == f"{name}-{i}"  # the rating on the right row


OLD_N_TIER_EXTRA = {"slm_cost_usd": 0.001, "tiers": [
    {"index": 0, "role": "slm", "model": "t0", "threshold": 0.7, "answered": False,
     "answer": "3", "decision": "deferred", "reason": "low_confidence", "output": "three"},
    {"index": 1, "role": "mid", "model": "t1", "threshold": 0.6, "answered": True,
     "answer": "4", "decision": "kept", "reason": "confident", "output": "four",
     "cost_usd": 0.004}], "answered_tier": 1}


def _old_row(url, question, extra, llm=None):
    """Insert an interaction as revision 0003 wrote it; ``llm``: (model, output, answer)."""
    cols = ("created_at, session_id, question, threshold, status, slm_model, slm_output,"
            " slm_answer, confidence, decision_defer, decision_reason, decision_message,"
            " llm_model, llm_output, llm_answer, final_answer, final_model, slm_prompt_tokens,"
            " slm_completion_tokens, llm_prompt_tokens, llm_completion_tokens, slm_latency_s,"
            " llm_latency_s, latency_s, cost_usd, errors, extra")
    m, out, ans = llm or (None, None, None)
    _exec(url, f"INSERT INTO interactions ({cols}) VALUES ('2026-01-02 03:04:05', 'old', :q,"
               " 0.7, 'ok', 't0', 'slm text', '3', 0.2, :defer, :reason, 'why', :m, :out, :ans,"
               " :final, :fm, 5, 6, :pt, :ct, 0.5, :ll, 1.0, 0.02, :errors, :extra)",
          params={"q": question, "defer": llm is not None,
                  "reason": "low_confidence" if llm else "confident", "m": m, "out": out,
                  "ans": ans, "final": ans or "3", "fm": m or "t0", "pt": 7 if llm else None,
                  "ct": 8 if llm else None, "ll": 0.9 if llm else None,
                  "errors": json.dumps(["llm error: slow"] if llm else []),
                  "extra": json.dumps(extra)})
    return _exec(url, "SELECT MAX(id) FROM interactions")[0][0][0]


def test_old_rows_at_0003_read_as_tiers_after_the_upgrade_and_back(db_url):
    """A log written by revision 0003 (two-tier rows, an N-tier row with its tiers in JSON, a
    rating) is upgraded to 0004: every row reads as its tiers; new turns get tier rows; the
    downgrade keeps a new N-tier turn's tiers in JSON and the schema goes up again."""
    from corea.events import CascadeResult, DecisionInfo, ModelOutput, TierStep

    cfg = alembic_config(db_url)
    command.upgrade(cfg, "0003")
    kept = _old_row(db_url, "kept", {"slm_cost_usd": 0.001, "slm_finish_reason": "stop"})
    deferred = _old_row(db_url, "deferred", {"slm_cost_usd": 0.001, "llm_cost_usd": 0.02,
                                              "llm_ttft_s": 0.3}, llm=("t2", "llm text", "5"))
    n_tier = _old_row(db_url, "three tiers", OLD_N_TIER_EXTRA, llm=("t1", "four", "4"))
    _exec(db_url, "INSERT INTO ratings (interaction_id, created_at, thumbs) "
                  "VALUES (:i, '2026-01-02 03:05:00', 'up')", params={"i": deferred})
    with Store(db_url) as s:  # upgrades to 0004
        tiers = {r["question"]: r["tiers"] for r in s.list_interactions(limit=None)}
        (t0,) = tiers["kept"]
        assert (t0["role"], t0["model"], t0["answered"], t0["decision"], t0["cost_usd"]) == (
            "slm", "t0", True, "kept", 0.001)
        d0, d1 = tiers["deferred"]
        assert (d0["answered"], d0["decision"], d0["stated_confidence"]) == (False, "deferred",
                                                                               0.2)
        assert (d1["role"], d1["model"], d1["output"], d1["answer"], d1["answered"]) == (
            "llm", "t2", "llm text", "5", True)
        assert (d1["prompt_tokens"], d1["cost_usd"], d1["ttft_s"], d1["error"]) == (
            7, 0.02, 0.3, "slow")
        assert [(t["role"], t["output"], t["answered"]) for t in tiers["three tiers"]] == [
            ("slm", "three", False), ("mid", "four", True)]
        assert s.get_interaction(deferred)["rating_thumbs"] == "up"
        steps = [TierStep(i, role, f"n{i}", ModelOutput(model=f"n{i}", text=f"out {i}",
                                                        answer=str(i)), 0.5 if i < 2 else None,
                          DecisionInfo(True, "low_confidence", 0.1, 0.5, "low") if i < 2
                          else None, answered=i == 2)
                 for i, role in enumerate(("slm", "mid", "llm"))]
        new = s.log_interaction(CascadeResult("new", final_answer="2", final_model="n2",
                                              tiers=steps, answered_tier=2), "new")
        assert [t["output"] for t in s.get_interaction(new)["tiers"]] == ["out 0", "out 1",
                                                                          "out 2"]
    assert _exec(db_url, "SELECT COUNT(*) FROM interaction_tiers")[0] == [(3,)]
    command.downgrade(cfg, "0003")
    (extra,), = _exec(db_url, "SELECT extra FROM interactions WHERE id = :i",
                      params={"i": new})[0]
    extra = json.loads(extra)
    assert [t["output"] for t in extra["tiers"]] == ["out 0", "out 1", "out 2"]
    assert extra["answered_tier"] == 2
    assert _exec(db_url, "SELECT COUNT(*) FROM interactions")[0] == [(4,)]
    assert _exec(db_url, "SELECT COUNT(*) FROM ratings")[0] == [(1,)]
    command.upgrade(cfg, "head")  # and up again: the downgraded turn reads from its JSON
    with Store(db_url) as s:
        assert [t["model"] for t in s.get_interaction(new)["tiers"]] == ["n0", "n1", "n2"]
        assert s.get_interaction(n_tier)["tiers"][1]["model"] == "t1"
