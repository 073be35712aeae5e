"""bench/soak.py's reading of the log: rows lost, duplicates and ratings lost are counted from
the questions the visitors saw answered; a server "answered after a fault" only with a turn it
started after the fault ended (the soak itself is a bench: ``python bench/soak.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from corea.backends.fake import FakeBackend
from corea.config import Settings
from corea.service import CoreaService

spec = importlib.util.spec_from_file_location(
    "soak", Path(__file__).resolve().parents[1] / "bench" / "soak.py")
soak = importlib.util.module_from_spec(spec)
sys.modules["soak"] = soak  # dataclasses look their module up
spec.loader.exec_module(soak)


def _log(svc: CoreaService, question: str) -> int:
    events = list(svc.ask(question, session_id="s"))
    return events[-1].result.interaction_id


def test_check_log_counts_lost_duplicate_and_unrated_turns(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    svc = CoreaService(Settings(threshold=0.5, db_url=url),
                       slm=FakeBackend(["\\boxed{4}\nConfidence: 0.9"], model_name="slm"),
                       llm=FakeBackend(["\\boxed{5}"], model_name="llm"))
    qs = [f"[soak v0 t{i}] What is {i} + 1?" for i in range(4)]
    a = _log(svc, qs[0])
    svc.rate(a, "up", comment="rated " + qs[0][:20])
    b = _log(svc, qs[1])
    _log(svc, qs[1])  # logged twice: a duplicate
    _log(svc, qs[3])  # a failed turn that was logged (an engine error row)

    turns = [soak.Turn(0, 0, qs[0], 1.0, 2.0, ok=True, interaction_id=a, rated=True),
             soak.Turn(0, 0, qs[1], 2.0, 3.0, ok=True, interaction_id=b, rated=True),
             soak.Turn(0, 1, qs[2], 3.0, 4.0, ok=True, interaction_id=99),  # never logged
             soak.Turn(0, 1, qs[3], 4.0, 5.0, error="stream:cascade_failed")]
    got = soak.check_log(url, turns)
    assert got == {"rows_in_log": 4, "rows_lost": 1, "duplicates": 1, "ratings_sent": 2,
                   "ratings_lost": 1, "failed_turns_logged": 1, "rows_not_asked": 0}


def test_answered_after_needs_a_turn_started_after_the_fault():
    turns = [soak.Turn(0, 0, "q0", 5.0, 30.0, ok=True),  # started before the fault ended
             soak.Turn(1, 1, "q1", 21.0, 25.0, ok=True),
             soak.Turn(soak.WARM, 0, "warm", 22.0, 23.0, ok=True),  # the warm-up never counts
             soak.Turn(0, 0, "q2", 22.0, 24.0, error="timeout")]
    got = soak.answered_after(turns, [{"kind": "db_outage", "at_s": 10.0, "end_s": 20.0},
                                      {"kind": "worker_crash", "skipped": "no worker found"}])
    assert got == [{"fault": "db_outage", "answered_after": [False, True],
                    "first_answer_after_s": [None, 5.0]}]
    assert soak.pct([3.0, 1.0, 2.0], 0.5) == 2.0 and soak.pct([], 0.5) is None
