"""A run summary's seconds: measured latencies and a time model, each against LLM-only."""

from __future__ import annotations

import pytest

from corea.eval.summary import format_summary, summarize
from corea.timing import TimeModel, TokenTime

TM = TimeModel(models={"s": TokenTime(overhead_s=1.0, completion_s_per_token=0.1),
                       "l": TokenTime(overhead_s=2.0, completion_s_per_token=0.2)},
               machine={"processor": "test CPU", "cpus": 2}, source="by hand")


def row(i, conf, slm_ok, llm_ok, slm_s, llm_s):
    return {"id": str(i), "slm_correct": slm_ok, "llm_correct": llm_ok,
            "slm": {"model": "s", "answer": "1", "finish_reason": "stop", "confidence": conf,
                    "prompt_tokens": 10, "completion_tokens": 10, "latency_s": slm_s},
            "llm": {"model": "l", "answer": "1", "finish_reason": "stop",
                    "prompt_tokens": 10, "completion_tokens": 10, "latency_s": llm_s}}


def test_the_summary_reports_measured_and_estimated_seconds_against_llm_only():
    rows = [row(0, 0.9, True, True, 2.0, 5.0), row(1, 0.1, False, True, 3.0, 7.0)]
    run = {"machine": {"processor": "AMD EPYC", "cpu_count": 2}}
    s = summarize(rows, threshold=0.5, run=run, n_boot=10, time_model=TM)["seconds"]
    m = s["measured"]  # item 0 kept (2 s), item 1 deferred (3 + 7 s); LLM-only 5 + 7 s
    assert m["seconds_per_item"] == pytest.approx(6.0)
    assert m["llm_only_s_per_item"] == pytest.approx(6.0)
    assert m["time_fraction_of_llm_only"] == pytest.approx(12 / 12)
    assert m["machine"]["processor"] == "AMD EPYC"
    t = s["time_model"]  # SLM call 1 + 10·0.1 = 2 s, LLM call 2 + 10·0.2 = 4 s
    assert t["seconds_per_item"] == pytest.approx((2 + 2 + 4) / 2)
    assert t["time_fraction_of_llm_only"] == pytest.approx(8 / 8)
    assert t["machine"]["processor"] == "test CPU" and t["source"] == "by hand"
    summary = summarize(rows, threshold=0.95, run=run, n_boot=10, time_model=TM)
    assert summary["seconds"]["time_model"]["time_fraction_of_llm_only"] == pytest.approx(12 / 8)
    line = next(x for x in format_summary(summary).splitlines() if "seconds at" in x)
    assert "measured on AMD EPYC, 2 CPUs" in line and "(150%)" in line


def test_without_a_time_model_only_the_measured_seconds_are_given():
    rows = [row(0, 0.9, True, True, 2.0, 5.0), row(1, 0.1, False, True, 3.0, 7.0)]
    s = summarize(rows, threshold=0.5, n_boot=10)["seconds"]
    assert s["time_model"] is None and s["measured"]["machine"] is None
    assert s["measured"]["time_fraction_of_llm_only"] == pytest.approx(1.0)
