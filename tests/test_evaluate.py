"""The evaluation harness on scripted backends: rows, grades, resume, mismatch, summary, CLI."""

from __future__ import annotations

import json
import math

import pytest

import corea.cli.evaluate as cli_ev
import corea.eval.harness as ev
from corea.eval import runs, summary
from corea.eval.records import with_views
from corea.backends.base import BackendError
from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.config import Price, Settings
from corea.datasets import load_dataset

PRICES = {"slm": Price(input_per_mtok=1.0, output_per_mtok=2.0),
          "llm": Price(input_per_mtok=10.0, output_per_mtok=20.0)}

# question -> (gold, choices, SLM reply, LLM reply)
SCRIPT = {
    "What is 1+1?": ("2", None, "One plus one. \\boxed{2}\nConfidence: 0.9", "\\boxed{2}"),
    "What is 2+3?": ("5", None, "Hmm. \\boxed{6}\nConfidence: 0.4", "So \\boxed{5}"),
    "What is 3*3?": ("9", None, "Easy \\boxed{9}\nConfidence: 0.95", "\\boxed{8}"),
    "What is 10-4?": ("6", None, "\\boxed{6}", "The answer is \\boxed{6}"),  # no confidence
    "Colour of the sky?": ("B", ["red", "blue"], "\\boxed{B}\nConfidence: 0.6", "\\boxed{A}"),
    "Broken gold?": ("", None, "\\boxed{1}\nConfidence: 0.5", "\\boxed{1}"),  # ungradable
}


def reply_for(side: int):
    def f(messages):
        q = messages[-1].content.split("\n\nOptions:")[0]
        return SCRIPT[q][side]
    return f


def write_dataset(tmp_path, questions=None):
    path = tmp_path / "toy.jsonl"
    with path.open("w") as f:
        for i, q in enumerate(questions or SCRIPT):
            gold, choices, _, _ = SCRIPT[q]
            row = {"id": f"t{i}", "question": q, "answer": gold}
            if choices:
                row["choices"] = choices
            f.write(json.dumps(row) + "\n")
    return path


def make_cascade(slm_reply=None, llm_reply=None, llm_name="llm", **kw):
    settings = Settings(prices=PRICES, db_url="sqlite://", confidence_mode="free", **kw)
    slm = FakeBackend(slm_reply or reply_for(2), model_name="slm")
    llm = FakeBackend(llm_reply or reply_for(3), model_name=llm_name)
    return Cascade(slm, llm, settings), slm, llm


def rows_by_id(run_dir):
    rows = runs.load_results(run_dir)
    return {r["id"]: r for r in rows}


INFO = {"dataset": "toy", "split": "test", "limit": None, "seed": None}


def test_rows_grades_and_run_json(tmp_path):
    items = load_dataset(write_dataset(tmp_path))
    cascade, slm, llm = make_cascade()
    run_dir = ev.evaluate(items, cascade, tmp_path / "run", progress=False, run_info=INFO)
    lines = (run_dir / "items.jsonl").read_text().splitlines()
    assert len(lines) == len(SCRIPT) and len(slm.calls) == len(llm.calls) == len(SCRIPT)
    rows = rows_by_id(run_dir)
    r = rows["t0"]
    assert r["question"] == "What is 1+1?" and r["gold"] == "2" and r["choices"] is None
    assert r["slm"]["answer"] == "2" and r["slm"]["answer_method"] == "free"
    assert r["slm"]["confidence"] == 0.9 and r["slm"]["confidence_method"] == "free"
    assert r["slm"]["finish_reason"] == "stop" and r["slm"]["error"] is None
    assert r["slm"]["text"].endswith("Confidence: 0.9")
    # fake tokens are words: cost = (prompt * 1 + completion * 2) / 1e6 for the SLM
    s = r["slm"]
    assert math.isclose(s["cost_usd"], (s["prompt_tokens"] + 2 * s["completion_tokens"]) / 1e6)
    assert s["completion_tokens"] == 6 and s["latency_s"] >= 0
    assert "confidence" not in r["llm"] and r["llm"]["answer"] == "2"
    assert (r["slm_correct"], r["slm_grade"], r["llm_correct"]) == (True, "correct", True)
    assert (rows["t1"]["slm_correct"], rows["t1"]["llm_correct"]) == (False, True)
    assert rows["t1"]["slm_grade"] == "incorrect"
    assert (rows["t2"]["slm_correct"], rows["t2"]["llm_correct"]) == (True, False)
    assert rows["t3"]["slm"]["confidence"] is None and rows["t3"]["slm"]["confidence_note"]
    assert rows["t4"]["choices"] == ["red", "blue"] and rows["t4"]["slm"]["answer"] == "B"
    assert (rows["t4"]["slm_correct"], rows["t4"]["llm_correct"]) == (True, False)
    assert rows["t5"]["slm_correct"] is None and rows["t5"]["slm_grade"] == "ungradable"

    run = json.loads((run_dir / "run.json").read_text())
    assert run["dataset"] == "toy" and run["models"] == {"slm": "slm", "llm": "llm"}
    assert run["backends"] == {"slm": "llamacpp", "llm": "llamacpp"}
    assert run["prices"]["llm"] == {"input_per_mtok": 10.0, "output_per_mtok": 20.0}
    assert run["prompt_version"] == ev.prompt_version()
    assert run["machine"]["cpu_count"] and "platform" in run["machine"]
    assert run["settings"]["confidence_mode"] == "free"
    sess = run["sessions"][-1]
    assert sess["status"] == "complete" and sess["n_generated"] == len(SCRIPT)
    assert sess["items_per_minute"] > 0


def test_interrupt_stops_in_flight_items_instead_of_waiting_for_them(tmp_path, monkeypatch):
    """Ctrl-C with --workers: the unfinished items' generations stop at their next chunk (the pool
    used to wait for every in-flight item to finish, minutes on CPU)."""
    import time

    items = load_dataset(write_dataset(tmp_path))
    slow = "x" * 400 + " \\boxed{4}\nConfidence: 0.5"  # 100 chunks x 0.2 s = 20 s per item
    slm = FakeBackend(lambda m: slow, model_name="slm", delay_s=0.2)
    cascade = Cascade(slm, FakeBackend(reply_for(3), model_name="llm"),
                      Settings(prices=PRICES, db_url="sqlite://", confidence_mode="free"))

    def interrupted_wait(*args, **kwargs):  # Ctrl-C arrives while every item is in flight
        time.sleep(1.0)
        raise KeyboardInterrupt

    monkeypatch.setattr(ev, "wait", interrupted_wait)
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        ev._run_pool(items, 4, lambda row: None,
                     lambda it, cancel: ev.score_item(it, cascade, True, cancel))
    assert time.perf_counter() - t0 < 8  # not the ~20 s each in-flight item still needs


def test_resume_after_interrupt_does_not_regenerate(tmp_path):
    items = load_dataset(write_dataset(tmp_path))
    n_calls = {"n": 0}

    def dying(messages):
        n_calls["n"] += 1
        if n_calls["n"] == 3:  # the 3rd SLM call: the process is killed
            raise KeyboardInterrupt
        return reply_for(2)(messages)

    cascade, _, _ = make_cascade(slm_reply=dying)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(items, cascade, tmp_path / "run", progress=False, run_info=INFO)
    assert list(rows_by_id(tmp_path / "run")) == ["t0", "t1"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["sessions"][-1]["status"] == "interrupted"

    cascade2, slm2, llm2 = make_cascade()
    ev.evaluate(items, cascade2, tmp_path / "run", progress=False, run_info=INFO)
    lines = (tmp_path / "run" / "items.jsonl").read_text().splitlines()
    ids = [json.loads(x)["id"] for x in lines]
    assert sorted(ids) == sorted(it.id for it in items) and len(ids) == len(set(ids))
    asked = {c[1][-1].content.split("\n\n")[0] for c in slm2.calls}
    assert len(slm2.calls) == len(llm2.calls) == len(items) - 2
    assert "What is 1+1?" not in asked and "What is 2+3?" not in asked
    # a third run has nothing to do
    cascade3, slm3, _ = make_cascade()
    ev.evaluate(items, cascade3, tmp_path / "run", progress=False, run_info=INFO)
    assert slm3.calls == [] and len(runs.load_results(tmp_path / "run")) == len(items)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [s["n_generated"] for s in run["sessions"]] == [2, len(items) - 2, 0]


def test_truncated_last_line_is_ignored_and_rewritten(tmp_path):
    items = load_dataset(write_dataset(tmp_path))[:4]
    cascade, _, _ = make_cascade()
    run_dir = ev.evaluate(items, cascade, tmp_path / "run", progress=False, run_info=INFO)
    path = run_dir / "items.jsonl"
    data = path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last_start + 25])  # crash mid-line
    assert [r["id"] for r in runs.load_results(run_dir)] == ["t0", "t1", "t2"]

    cascade2, slm2, _ = make_cascade()
    ev.evaluate(items, cascade2, run_dir, progress=False, run_info=INFO)
    assert len(slm2.calls) == 1
    lines = path.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["t0", "t1", "t2", "t3"]

    # a corrupt line in the middle is an error, not silently dropped
    path.write_text(lines[0] + "\n{oops\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(ValueError, match="corrupt line"):
        runs.load_results(run_dir)


def test_rows_load_in_id_order_whatever_order_items_finished(tmp_path):
    """Fits on run rows (probe, calibrator, held-out folds) must not depend on which item of a
    batch finished first, nor on the LLM phase rewriting a row at the end of the file."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    order = ["q10", "q2", "q1", "q2"]  # q2 rewritten last (an LLM phase completing it)
    (run_dir / "items.jsonl").write_text("".join(
        json.dumps({"id": i, "n": n}) + "\n" for n, i in enumerate(order)))
    rows = runs.load_results(run_dir)
    assert [r["id"] for r in rows] == ["q1", "q2", "q10"]
    assert rows[1]["n"] == 3  # the last row of a repeated id
    assert sorted(["b", "a10", "a9", "a"], key=runs.natural_key) == ["a", "a9", "a10", "b"]


def test_mismatching_run_refuses_unless_overwrite(tmp_path):
    items = load_dataset(write_dataset(tmp_path))[:2]
    cascade, _, _ = make_cascade()
    ev.evaluate(items, cascade, tmp_path / "run", progress=False, run_info=INFO)
    other, _, llm = make_cascade(llm_name="bigger-llm")
    with pytest.raises(ev.RunMismatch, match="llm.name"):
        ev.evaluate(items, other, tmp_path / "run", progress=False, run_info=INFO)
    with pytest.raises(ev.RunMismatch, match="dataset"):
        ev.evaluate(items, make_cascade()[0], tmp_path / "run", progress=False,
                    run_info={**INFO, "dataset": "gsm8k"})
    assert llm.calls == [] and len(runs.load_results(tmp_path / "run")) == 2
    ev.evaluate(items, other, tmp_path / "run", progress=False, run_info=INFO, overwrite=True)
    assert len(llm.calls) == 2
    assert {r["llm"]["model"] for r in runs.load_results(tmp_path / "run")} == {"bigger-llm"}


def test_workers_pool_and_fatal_error(tmp_path):
    items = load_dataset(write_dataset(tmp_path))
    cascade, slm, _ = make_cascade()
    ev.evaluate(items, cascade, tmp_path / "pool", workers=3, progress=False, run_info=INFO)
    ids = [r["id"] for r in runs.load_results(tmp_path / "pool")]
    assert sorted(ids) == sorted(it.id for it in items) and len(slm.calls) == len(items)

    settings = Settings(prices=PRICES, db_url="sqlite://")
    broken = Cascade(FakeBackend(error=BackendError("model_missing", "no weights"),
                                 model_name="slm"), FakeBackend(["\\boxed{1}"], model_name="llm"),
                     settings)
    with pytest.raises(ev.EvaluationAborted, match="model_missing"):
        ev.evaluate(items, broken, tmp_path / "broken", progress=False, run_info=INFO)
    assert runs.load_results(tmp_path / "broken") == []

    # a transient fault is recorded on the item (the cascade would defer), not fatal
    flaky = Cascade(FakeBackend(error=BackendError("timeout", "slow"), model_name="slm"),
                    FakeBackend(reply_for(3), model_name="llm"), settings)
    ev.evaluate(items[:1], flaky, tmp_path / "flaky", progress=False, run_info=INFO)
    (r,) = runs.load_results(tmp_path / "flaky")
    assert r["slm"]["error"].startswith("timeout") and r["slm_correct"] is False
    assert r["slm_grade"] == "no_prediction" and r["llm_correct"] is True


def _row(i, conf, s, l, sc, lc):
    return {"id": i, "slm": {"confidence": conf, "cost_usd": sc},
            "llm": {"cost_usd": lc}, "slm_correct": s, "llm_correct": l,
            "slm_grade": "x", "llm_grade": "y"}


def test_summarize_hand_computed():
    rows = [_row("a", 0.9, True, True, 1.0, 10.0),
            _row("b", 0.8, False, True, 1.0, 10.0),
            _row("c", 0.5, True, False, 1.0, 10.0),
            _row("d", None, False, True, 1.0, 10.0),
            _row("e", 0.3, False, False, 2.0, 20.0),
            _row("f", 0.99, None, True, 5.0, 50.0)]  # ungradable: excluded everywhere
    s = summary.summarize(rows, threshold=0.85, n_boot=200)
    assert (s["n_rows"], s["n"], s["n_ungradable"], s["ungradable_ids"]) == (6, 5, 1, ["f"])
    assert s["slm_pass_at_1"]["value"] == pytest.approx(0.4)
    assert s["llm_pass_at_1"]["value"] == pytest.approx(0.6)
    lo, hi = s["slm_pass_at_1"]["ci95"]
    assert 0.0 <= lo <= 0.4 <= hi <= 1.0
    assert s["slm_only_cost"] == pytest.approx(6.0) and s["llm_only_cost"] == pytest.approx(60.0)
    # τ=0.85: b, c, d (None), e deferred -> a:slm T, b:llm T, c:llm F, d:llm T, e:llm F
    c = s["cascade"]
    assert c["deferral_rate"] == pytest.approx(0.8) and c["n_deferred"] == 4
    assert c["pass_at_1"] == pytest.approx(0.6)
    assert c["cost"] == pytest.approx(6.0 + 50.0)
    assert c["cost_fraction_of_llm_only"] == pytest.approx(56.0 / 60.0)
    rr = c["random_routing"]
    assert rr["pass_at_1"] == pytest.approx(0.2 * 0.4 + 0.8 * 0.6)
    assert rr["cost"] == pytest.approx(6.0 + 0.8 * 60.0)
    # paper rule τ = LLM pass@1 = 0.6: c, d, e deferred -> T, F, F, T, F
    p = s["paper_rule"]
    assert p["threshold"] == pytest.approx(0.6) and p["deferral_rate"] == pytest.approx(0.6)
    assert p["pass_at_1"] == pytest.approx(0.4) and p["cost"] == pytest.approx(6.0 + 40.0)
    # best within 2 points of 0.6: τ=0 defers only d -> T, F, T, T, F = 0.6 at cost 16
    b = s["best_within_2pt"]
    assert b["threshold"] == 0.0 and b["pass_at_1"] == pytest.approx(0.6)
    assert b["cost"] == pytest.approx(16.0) and b["saving"] == pytest.approx(1 - 16.0 / 60.0)
    cal = s["calibration"]
    assert cal["n"] == 5 and cal["n_no_confidence"] == 1
    assert cal["mean_confidence"] == pytest.approx((0.9 + 0.8 + 0.5 + 0.3) / 4)
    assert cal["n_distinct_confidences"] == 4
    assert [r["threshold"] for r in s["sweep"]][:5] == [0.0, 0.3, 0.5, 0.8, 0.9]
    assert s["sweep"][-1]["deferral_rate"] == 1.0
    table = summary.format_summary(s)
    assert "| SLM-only pass@1 [95% CI] | 40.0% [" in table and "f" in table
    assert "saving 73.3%" in table
    json.dumps(s, allow_nan=False)  # strict JSON

    empty = summary.summarize([rows[-1]])
    assert empty["n"] == 0 and empty["cascade"] is None
    assert "| items (gradable / total) | 0 / 1 |" in summary.format_summary(empty)


def test_default_run_dir_is_sanitised():
    p = runs.default_run_dir("/tmp/my data.jsonl", "test", None, "Qwen/Qwen2.5 7B", "gpt-4o", 3)
    assert str(p) == "runs/my_data-test-all-Qwen2.5_7B-gpt-4o-seed3"
    assert str(runs.default_run_dir("gsm8k", "test", 200, "a", "b")) == "runs/gsm8k-test-200-a-b"


def test_main_end_to_end(tmp_path, monkeypatch, capsys):
    data = write_dataset(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("prices:\n  s: {input_per_mtok: 1.0, output_per_mtok: 2.0}\n"
                   "  l: {input_per_mtok: 10.0, output_per_mtok: 20.0}\n"
                   "confidence_mode: free\n")
    made = []

    def fake_make_backend(ms, cache_dir):
        side = 2 if ms.model == "s" else 3
        b = FakeBackend(reply_for(side), model_name=ms.name)
        made.append((ms, b))
        return b

    monkeypatch.setattr(cli_ev, "make_backend", fake_make_backend)
    run_dir = tmp_path / "run"
    argv = ["--dataset", str(data), "--config", str(cfg), "--slm-backend", "fake", "--slm", "s",
            "--llm-backend", "fake", "--llm", "l", "--max-new-tokens", "64", "--run-dir",
            str(run_dir), "--threshold", "0.5", "--no-progress", "--workers", "2"]
    assert cli_ev.main(argv) == 0
    out = capsys.readouterr().out
    assert "| metric | value |" in out and "cascade τ=0.5" in out
    assert made[0][0].backend == "fake" and made[0][0].max_new_tokens == 64
    summary = json.loads((run_dir / "summary.json").read_text())
    sweep = json.loads((run_dir / "sweep.json").read_text())
    assert summary["n_rows"] == 6 and summary["n"] == 5 and summary["ungradable_ids"] == ["t5"]
    assert summary["llm_only_cost"] > summary["slm_only_cost"] > 0
    assert summary["throughput"]["items_per_minute"] > 0 and len(sweep) >= 3
    # SLM right on t0, t2, t3, t4 (t5 ungradable, excluded) -> 4/5; LLM on t0, t1, t3 -> 3/5
    assert summary["slm_pass_at_1"]["value"] == pytest.approx(4 / 5)
    assert summary["llm_pass_at_1"]["value"] == pytest.approx(3 / 5)
    assert summary["run"]["models"] == {"slm": "s", "llm": "l"}

    # rerun: resumes with nothing to generate
    n_before = sum(len(b.calls) for _, b in made)
    assert cli_ev.main(argv) == 0
    assert sum(len(b.calls) for _, b in made) == n_before
    # summarize only, another τ
    assert cli_ev.main(argv + ["--summarize-only", "--threshold", "0.95"]) == 0
    assert "cascade τ=0.95" in capsys.readouterr().out
    # another LLM in the same folder is refused with a clear message
    other = list(argv)
    other[other.index("l")] = "other"
    assert cli_ev.main(other) == 2
    assert "different configuration" in capsys.readouterr().err


def test_best_saving_text_never_calls_an_extra_cost_a_saving():
    from corea.eval.summary import _best_text

    assert _best_text(None) == "no τ keeps pass@1 within 2 points"
    row = {"threshold": 1.0, "pass_at_1": 0.5, "deferral_rate": 1.0}
    assert _best_text({**row, "saving": -0.339}).startswith("none: no τ within 2 points costs "
                                                            "less")
    assert "33.9% above LLM-only" in _best_text({**row, "saving": -0.339})
    assert _best_text({**row, "saving": 0.2}).startswith("saving 20.0%")


def test_summarize_only_refuses_a_run_of_other_arguments(tmp_path, capsys):
    import json as _json

    from corea.cli.evaluate import main

    (tmp_path / "run.json").write_text(_json.dumps({"dataset": "gsm8k", "split": "test",
                                                    "limit": 200, "seed": None}))
    (tmp_path / "items.jsonl").write_text("")
    assert main(["--dataset", "math500", "--limit", "5", "--run-dir", str(tmp_path),
                 "--summarize-only"]) == 2
    err = capsys.readouterr().err
    assert "dataset: run has 'gsm8k', arguments say 'math500'" in err


def test_throughput_of_a_run_in_progress_uses_completion_times():
    from corea.eval.summary import _throughput

    rows = [{"done_at": f"2026-01-01T00:{m:02d}:00+00:00", "wall_s": 600.0} for m in (0, 2, 4)]
    tp = _throughput(rows, {"sessions": [{"status": "running", "n_generated": 0,
                                          "elapsed_s": 0.0}]})
    assert tp["items_per_minute"] == pytest.approx(0.5)  # 2 more items in 4 minutes
    assert "in progress" in tp["source"]


def test_slm_only_run_scores_one_model(tmp_path):
    from corea.backends.fake import FakeBackend
    from corea.cascade import Cascade
    from corea.config import Settings
    from corea.datasets import Item
    from corea.eval.harness import evaluate
    from corea.eval.runs import load_results
    from corea.eval.summary import format_summary, summarize

    slm = FakeBackend(lambda m: "\\boxed{4}\nConfidence: 0.8" if "2+2" in m[-1].content
                      else "\\boxed{1}\nConfidence: 0.6", model_name="s")
    llm = FakeBackend(["\\boxed{4}"], model_name="l")
    items = [Item(id="a", question="2+2?", answer="4", choices=None, dataset="t"),
             Item(id="b", question="3+3?", answer="6", choices=None, dataset="t")]
    evaluate(items, Cascade(slm, llm, Settings()), tmp_path, progress=False, slm_only=True)
    assert llm.calls == []  # the LLM never ran
    rows = load_results(tmp_path)
    assert [r["llm"] for r in rows] == [None, None] and rows[0]["llm_grade"] == "not_run"
    summ = summarize(rows, n_boot=20)
    assert summ["slm_only_run"] and summ["n"] == 2 and summ["slm_pass_at_1"]["value"] == 0.5
    assert summ["calibration"]["brier"] == pytest.approx(((0.8 - 1) ** 2 + 0.6 ** 2) / 2)
    assert summ["cascade"] is None and "LLM-only pass@1" in format_summary(summ)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["identity"]["slm_only"] is True
    from corea.eval.report import write_report

    md = write_report(tmp_path, n_boot=20).read_text()  # no cascade sections, no crash
    assert "SLM-only pass@1" in md and "not drawn" in md


def test_cli_samples_first_draws_samples_before_the_greedy_pass(tmp_path, monkeypatch):
    data = write_dataset(tmp_path, ["What is 1+1?", "What is 2+3?", "What is 3*3?"])
    order = []

    def fake_make_backend(ms, cache_dir):
        side = 2 if ms.model == "s" else 3
        b = FakeBackend(reply_for(side), model_name=ms.name)
        orig = b.stream_chat

        def spy(messages, params, _side=side):
            order.append(("sample" if params.temperature > 0 else "greedy", _side))
            return orig(messages, params)

        b.stream_chat = spy
        return b

    monkeypatch.setattr(cli_ev, "make_backend", fake_make_backend)
    run_dir = tmp_path / "run"
    argv = ["--dataset", str(data), "--slm-backend", "fake", "--slm", "s", "--llm-backend",
            "fake", "--llm", "l", "--run-dir", str(run_dir), "--no-progress", "--samples", "2",
            "--samples-limit", "2", "--samples-first"]
    assert cli_ev.main(argv) == 0
    kinds = [k for k, side in order if side == 2]
    assert kinds[:4] == ["sample"] * 4 and kinds[4:] == ["greedy"] * 3
    rows = {r["id"]: r for r in runs.load_results(run_dir)}
    assert len(rows["t0"]["slm_samples"]) == 2 and "slm_samples" not in rows["t2"]


def test_slm_first_writes_pending_rows_then_completes_them(tmp_path):
    """--slm-first: the SLM runs on every item first (pending rows, no LLM call), an interrupted
    LLM phase keeps them, and a plain rerun completes them without running the SLM again; the
    completed rows equal a one-phase run's."""
    items = load_dataset(write_dataset(tmp_path))
    n_llm = {"n": 0}

    def dying_llm(messages):
        n_llm["n"] += 1
        if n_llm["n"] == 2:  # killed during the LLM phase
            raise KeyboardInterrupt
        return reply_for(3)(messages)

    cascade, slm, _ = make_cascade(llm_reply=dying_llm)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(items, cascade, tmp_path / "run", progress=False, run_info=INFO,
                    slm_first=True)
    assert len(slm.calls) == len(items)  # the whole SLM phase ran before any LLM call
    latest = {r["id"]: r for r in runs.read_items(tmp_path / "run" / "items.jsonl", False)}
    assert len(latest) == len(items)
    assert sum(ev.is_pending(r) for r in latest.values()) == len(items) - 1
    pend = next(r for r in latest.values() if ev.is_pending(r))
    assert len(pend["tiers"]) == 1 and pend["n_tiers"] == 2  # one record per tier run so far
    pend = with_views(pend)  # the two-tier keys every reader knows
    assert pend["llm"] is None and pend["llm_correct"] is None and pend["slm"]["answer"]
    assert pend["llm_grade"] == "pending"

    cascade2, slm2, llm2 = make_cascade()
    ev.evaluate(items, cascade2, tmp_path / "run", progress=False, run_info=INFO)
    assert slm2.calls == [] and len(llm2.calls) == len(items) - 1
    done = runs.load_results(tmp_path / "run")
    assert len(done) == len(items) and not any(ev.is_pending(r) for r in done)

    cascade3, _, _ = make_cascade()
    ev.evaluate(items, cascade3, tmp_path / "one", progress=False, run_info=INFO)
    one = {r["id"]: r for r in runs.load_results(tmp_path / "one")}
    drop = ("wall_s", "done_at")
    for r in done:
        a = {k: v for k, v in r.items() if k not in drop}
        b = {k: v for k, v in one[r["id"]].items() if k not in drop}
        timing = ("latency_s", "ttft_s")
        for x in (a, b):
            for side in ("slm", "llm"):
                x[side] = {k: v for k, v in x[side].items() if k not in timing}
            x["tiers"] = [{**t, "output": {k: v for k, v in t["output"].items()
                                           if k not in timing}} for t in x["tiers"]]
        assert a == b
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["sessions"][0]["n_slm_first"] == len(items)
    assert run["sessions"][1]["n_llm_completed"] == len(items) - 1


def test_phase_runs_one_half_of_an_slm_first_run(tmp_path):
    """phase="slm" writes pending rows and calls no LLM; phase="llm" completes only the pending
    rows and starts no new item (the SLM is not called); a later run does the rest."""
    items = load_dataset(write_dataset(tmp_path))
    run = tmp_path / "run"
    cascade, slm, llm = make_cascade()
    ev.evaluate(items[:2], cascade, run, progress=False, run_info=INFO, phase="slm")
    assert len(slm.calls) == 2 and llm.calls == []
    rows = runs.read_items(run / "items.jsonl", False)
    assert [ev.is_pending(r) for r in rows] == [True, True]

    cascade2, slm2, llm2 = make_cascade()
    ev.evaluate(items, cascade2, run, progress=False, run_info=INFO, slm_first=True,
                phase="llm")
    assert slm2.calls == [] and len(llm2.calls) == 2
    latest = {r["id"]: r for r in runs.read_items(run / "items.jsonl", False)}
    assert len(latest) == 2 and not any(ev.is_pending(r) for r in latest.values())

    cascade3, slm3, llm3 = make_cascade()
    ev.evaluate(items, cascade3, run, progress=False, run_info=INFO)
    assert len(slm3.calls) == len(items) - 2 and len(llm3.calls) == len(items) - 2
    record = json.loads((run / "run.json").read_text())
    assert [s["status"] for s in record["sessions"]] == [
        "slm phase complete", "llm phase complete", "complete"]
    with pytest.raises(ValueError, match="phase"):
        ev.evaluate(items, cascade3, run, progress=False, run_info=INFO, phase="gen")
    with pytest.raises(ValueError, match="slm_only"):
        ev.evaluate(items, cascade3, run, progress=False, run_info=INFO, slm_only=True,
                    phase="slm")


def test_cli_phase_choices_are_the_harness_phases():
    """The CLI's --phase choices are :data:`corea.eval.harness.PHASES` (written out in the parser
    so that --help does not import the harness)."""
    action = next(a for a in cli_ev.build_parser()._actions if a.dest == "phase")
    assert tuple(action.choices) == ev.PHASES


def test_cli_phase_needs_slm_first(tmp_path, capsys):
    """--phase without --slm-first (or with --slm-only) is refused with a message, exit 2."""
    data = write_dataset(tmp_path)
    argv = ["--dataset", str(data), "--slm-backend", "fake", "--llm-backend", "fake",
            "--run-dir", str(tmp_path / "run"), "--no-progress", "--phase", "llm"]
    assert cli_ev.main(argv) == 2
    assert "--phase goes with --slm-first" in capsys.readouterr().err
    assert cli_ev.main(argv + ["--slm-first", "--slm-only"]) == 2
    assert not (tmp_path / "run").exists()


def test_cli_slm_phase_alone_summarizes_the_pending_rows(tmp_path, monkeypatch, capsys):
    """``--slm-first --phase slm`` exits 0 with a summary of SLM-only rows (LLM pending), and
    ``--phase llm`` then completes them."""
    data = write_dataset(tmp_path)
    calls = {2: 0, 3: 0}

    def fake_make_backend(ms, cache_dir):
        side = 2 if ms.model == "s" else 3

        def reply(messages, _side=side):
            calls[_side] += 1
            return reply_for(_side)(messages)

        return FakeBackend(reply, model_name=ms.name)

    monkeypatch.setattr(cli_ev, "make_backend", fake_make_backend)
    argv = ["--dataset", str(data), "--slm-backend", "fake", "--slm", "s", "--llm-backend",
            "fake", "--llm", "l", "--run-dir", str(tmp_path / "run"), "--no-progress",
            "--slm-first"]
    assert cli_ev.main(argv + ["--phase", "slm"]) == 0
    assert calls[3] == 0 and calls[2] > 0
    assert "| metric | value |" in capsys.readouterr().out
    assert cli_ev.main(argv + ["--phase", "llm"]) == 0
    rows = runs.load_results(tmp_path / "run")
    assert calls[3] == len(rows) and not any(ev.is_pending(r) for r in rows)


def test_rows_written_with_only_the_two_tier_keys_stay_readable_and_resumable(tmp_path):
    """Rows of a run made before the per-tier records (as the committed ones in
    data/generations/) are read with their records derived, and a pending one (an SLM-first
    run stopped before its LLM phase) is completed by the harness into the new record, its SLM
    side kept as it was generated."""
    from corea.eval.records import legacy_tiers, two_tier_keys

    items = load_dataset(write_dataset(tmp_path))
    cascade, _, _ = make_cascade()
    run = tmp_path / "run"
    ev.evaluate(items, cascade, run, progress=False, run_info=INFO, slm_first=True, phase="slm")
    new = [with_views(r) for r in runs.read_items(run / "items.jsonl", False)]
    old = [{k: v for k, v in r.items() if k not in ("tiers", "n_tiers")} for r in new]
    old[0]["slm"] = {**old[0]["slm"], "text": "as generated then \\boxed{2}"}
    (run / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    read = rows_by_id(run)
    assert read["t0"]["tiers"][0]["output"]["text"] == "as generated then \\boxed{2}"
    assert all(ev.is_pending(r) and r["n_tiers"] == 2 for r in read.values())
    assert legacy_tiers(old[1]) == [{k: v for k, v in new[1]["tiers"][0].items()}]
    cascade2, slm2, llm2 = make_cascade()
    ev.evaluate(items, cascade2, run, progress=False, run_info=INFO)
    assert slm2.calls == [] and len(llm2.calls) == len(items)
    raw = {r["id"]: r for r in runs.read_items(run / "items.jsonl", False)}
    assert "slm" not in raw["t0"] and len(raw["t0"]["tiers"]) == 2  # written as records
    done = rows_by_id(run)
    assert done["t0"]["slm"]["text"] == "as generated then \\boxed{2}"
    assert (done["t1"]["slm_correct"], done["t1"]["llm_correct"]) == (False, True)
    assert two_tier_keys(raw["t1"])["llm"] == done["t1"]["llm"]


def test_the_committed_runs_read_with_records_and_two_tier_keys():
    """Every committed run folder reads without conversion: each row has its tier records and
    the two-tier keys, and the records hold the same outputs and grades."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "data" / "generations"
    for name in ("gsm8k-test-200", "svamp-test-100-slm", "gsm8k-test-200-pot"):
        rows = runs.load_results(root / name)
        assert rows
        for r in rows[:50]:
            t = r["tiers"]
            assert t[0]["output"] is r["slm"] and t[0]["correct"] == r["slm_correct"]
            if r["llm"] is not None:
                assert t[-1]["output"] is r["llm"] and t[-1]["grade"] == r["llm_grade"]
                assert len(t) == 2 and t[-1]["confidence"] is None
            else:
                assert len(t) == 1
                assert ev.is_pending(r) == (r["llm_grade"] == "pending")
