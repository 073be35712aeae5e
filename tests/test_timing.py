"""The per-token time model (corea.timing) and the bench that fits it (bench/time_model.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corea.timing import (TimedCall, TimeModel, TokenTime, calls_from_rows, fit_time_model,
                          fit_token_time, load_time_model, shipped_time_model)

ROOT = Path(__file__).resolve().parents[1]


def test_seconds_is_linear_in_tokens():
    t = TokenTime(overhead_s=0.5, prompt_s_per_token=0.01, completion_s_per_token=0.1)
    assert t.seconds(100, 20) == pytest.approx(0.5 + 1.0 + 2.0)
    with pytest.raises(ValueError):
        t.seconds(-1, 0)


def test_a_model_without_a_fit_takes_no_time():
    tm = TimeModel(models={"a": TokenTime(overhead_s=1.0)})
    assert tm.seconds("b", 10, 10) == 0.0
    assert tm.missing(["a", "b"]) == ["b"]


def test_fit_recovers_the_coefficients_of_exact_calls():
    calls = [TimedCall("m", p, c, 0.3 + 0.002 * p + 0.05 * c)
             for p in (40, 90, 150) for c in (10, 60, 200)]
    t = fit_token_time(calls)
    assert (t.overhead_s, t.prompt_s_per_token, t.completion_s_per_token) == \
        pytest.approx((0.3, 0.002, 0.05), rel=1e-6)
    assert t.n_calls == 9


def test_fit_never_gives_a_negative_coefficient():
    # seconds fall with prompt length here: plain least squares would give a negative slope
    calls = [TimedCall("m", p, c, 5.0 - 0.01 * p + 0.1 * c)
             for p in (10, 100, 200) for c in (10, 50)]
    t = fit_token_time(calls)
    assert min(t.overhead_s, t.prompt_s_per_token, t.completion_s_per_token) >= 0.0


def test_fit_refuses_too_few_or_uniform_calls():
    with pytest.raises(ValueError, match="at least 3"):
        fit_token_time([TimedCall("m", 1, 1, 1.0)])
    with pytest.raises(ValueError, match="vary"):
        fit_token_time([TimedCall("m", 50, 20, 1.0 + i) for i in range(5)])
    with pytest.raises(ValueError, match="^m: "):
        fit_time_model([TimedCall("m", 50, 20, 1.0)] * 3)


def test_calls_from_rows_skips_failed_and_untimed_calls():
    rows = [{"slm": {"model": "s", "prompt_tokens": 10, "completion_tokens": 5, "latency_s": 1.0},
             "llm": {"model": "l", "prompt_tokens": 10, "completion_tokens": 5, "latency_s": 0.0}},
            {"slm": {"model": "s", "prompt_tokens": 10, "completion_tokens": 5, "latency_s": 2.0,
                     "error": "timeout"}, "llm": None}]
    assert calls_from_rows(rows) == [TimedCall("s", 10, 5, 1.0)]


def test_like_gives_an_adapter_its_base_models_time():
    tm = TimeModel(models={"base": TokenTime(overhead_s=1.0)})
    assert tm.like("base + adapter", "base").seconds("base + adapter", 0, 0) == 1.0
    assert tm.like("x", "missing") is tm


def test_save_and_load_round_trip(tmp_path):
    tm = TimeModel(models={"m": TokenTime(overhead_s=1.0, completion_s_per_token=0.05)},
                   machine={"cpu_count": 2}, source="test")
    tm.save(tmp_path / "tm.json")
    assert load_time_model(tmp_path / "tm.json") == tm


def test_the_shipped_time_model_covers_the_embedded_pair():
    tm = shipped_time_model()
    assert tm is not None and tm.machine
    slm, llm = "Qwen2.5-Coder-0.5B-Instruct", "Qwen2.5-Coder-1.5B-Instruct"
    assert tm.missing([slm, llm]) == []
    # per completion token the 1.5B is slower than the 0.5B
    assert tm.models[llm].completion_s_per_token > tm.models[slm].completion_s_per_token


def test_bench_fits_a_time_model_on_the_fake_backend(tmp_path):
    out = tmp_path / "tm.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "time_model.py"), "--backend", "fake",
                    "--models", "llm", "--max-new-tokens", "8", "40", "--out", str(out)],
                   check=True, cwd=ROOT, capture_output=True, text=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    data = json.loads(out.read_text())
    tm = TimeModel.model_validate(data)
    assert list(tm.models) == ["Qwen2.5-Coder-1.5B-Instruct"]
    assert tm.models["Qwen2.5-Coder-1.5B-Instruct"].n_calls == 16  # 8 questions × 2 budgets
    assert "cpu_count" in tm.machine and "fake backend" in tm.source


def test_bench_reproduces_the_shipped_estimate(tmp_path):
    out = tmp_path / "tm.json"
    subprocess.run([sys.executable, "bench/time_model.py", "--from-speed",
                    "bench/results/speed-llamacpp.json", "--out", str(out)],
                   check=True, cwd=ROOT, capture_output=True)
    assert load_time_model(out) == shipped_time_model()
