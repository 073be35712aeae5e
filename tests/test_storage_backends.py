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
