"""N-tier evaluation runs on scripted backends through the one harness (issue 28): ``corea
evaluate`` with three tiers end to end (one record per tier in items.jsonl), interrupted and
resumed, with hidden states, samples, --verify and --slm-first (one phase per tier), the
summary's N-tier section, a run of other tiers refused, the typed loader, the report and the
threshold explorer's τ-vector view, all from the one record."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import corea.cli.evaluate as cli_ev
import corea.eval.harness as ev
from corea.backends.base import BackendError
from corea.backends.fake import FakeBackend
from corea.eval import runs, summary
from corea.eval.tiers import TierItem, evaluate_taus, load_tier_items

# question -> (gold, reply of tier 1, tier 2, tier 3)
SCRIPT = {
    "What is 1+1?": ("2", "\\boxed{2}\nConfidence: 0.9", "\\boxed{2}\nConfidence: 0.9",
                     "\\boxed{2}"),
    "What is 2+3?": ("5", "\\boxed{6}\nConfidence: 0.4", "So \\boxed{5}\nConfidence: 0.8",
                     "\\boxed{5}"),
    "What is 3*3?": ("9", "\\boxed{8}\nConfidence: 0.3", "\\boxed{7}\nConfidence: 0.3",
                     "It is \\boxed{9}"),
    "What is 10-4?": ("6", "\\boxed{6}\nConfidence: 0.5", "\\boxed{5}\nConfidence: 0.9",
                      "\\boxed{4}"),
    "Broken gold?": ("", "\\boxed{1}\nConfidence: 0.5", "\\boxed{1}\nConfidence: 0.5",
                     "\\boxed{1}"),  # ungradable
}
MODELS = ["t0", "t1", "t2"]
CONFIG = """\
confidence_mode: free
threshold: 0.5
tiers:
  - {backend: fake, model: t0, threshold: 0.7}
  - {backend: fake, model: t1, threshold: 0.6}
  - {backend: fake, model: t2}
prices:
  t0: {input_per_mtok: 1.0, output_per_mtok: 2.0}
  t1: {input_per_mtok: 3.0, output_per_mtok: 6.0}
  t2: {input_per_mtok: 10.0, output_per_mtok: 20.0}
"""


def reply_for(tier: int):
    def f(messages):
        return SCRIPT[messages[-1].content.split("\n\nOptions:")[0]][tier + 1]
    return f


def write_dataset(tmp_path):
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": SCRIPT[q][0]})
                            + "\n" for i, q in enumerate(SCRIPT)))
    return path


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """``(argv, made, run_dir)``: a three-tier `corea evaluate` on the scripted backends;
    ``made`` lists ``(model, backend)`` as the command builds them."""
    cfg = tmp_path / "tiers.yaml"
    cfg.write_text(CONFIG)
    made: list = []
    dying = {}

    def fake_make_backend(ms, cache_dir):
        k = MODELS.index(ms.model)
        b = FakeBackend(dying.get(k) or reply_for(k), model_name=ms.name,
                        # hidden states only where the settings ask the engine for them
                        states=(lambda m, t, k=k: {"prompt": np.full(4, float(k)),
                                                   "end": np.arange(4.0) + k})
                        if ms.hidden_states else None,
                        next_logprobs=lambda m, prefix, cands: {"Yes": math.log(0.6),
                                                                "No": math.log(0.2)})
        made.append((ms.model, b))
        return b

    monkeypatch.setattr(cli_ev, "make_backend", fake_make_backend)
    run_dir = tmp_path / "run"
    argv = ["--dataset", str(write_dataset(tmp_path)), "--config", str(cfg), "--run-dir",
            str(run_dir), "--no-progress"]
    return argv, made, run_dir, dying


def calls(made, model, kind=None):
    return sum(1 for m, b in made if m == model for c in b.calls if kind in (None, c[0]))


def without_timing(tiers):
    return [{**t, "output": {k: v for k, v in t["output"].items()
                             if k not in ("latency_s", "ttft_s")}} for t in tiers]


def test_three_tiers_slm_first_with_hidden_states_samples_and_verify_resume(setup, tmp_path,
                                                                            capsys):
    """The one harness over three tiers with every option: --slm-first runs one phase per tier
    (tier 1 on every item, then tier 2, then tier 3), an interrupt in tier 2's phase keeps every
    row (pending), and the same command resumes it without running tier 1 again; each deciding
    tier's record keeps its hidden states, P(True) and sampled solutions, and the completed rows
    equal a one-phase run's."""
    argv, made, run_dir, dying = setup
    opts = ["--slm-first", "--hidden-states", "--samples", "2", "--verify"]
    n = {"n": 0}

    def dies_on_the_third_item(messages):
        n["n"] += 1
        if n["n"] == 3:  # killed while tier 2 answers the third item of its phase
            raise KeyboardInterrupt
        return reply_for(1)(messages)

    dying[1] = dies_on_the_third_item
    assert cli_ev.main(argv + opts) == 1
    assert "interrupted: completed items are saved in" in capsys.readouterr().err
    # tier 1 ran on every item before tier 2 started; tier 3 never ran
    assert [calls(made, m, "chat") for m in MODELS] == [5, 3, 0]
    latest = {r["id"]: r for r in runs.load_results(run_dir)}
    assert sorted(len(r["tiers"]) for r in latest.values()) == [1, 1, 1, 2, 2]
    assert all(ev.is_pending(r) and r["llm_grade"] == "pending" and r["llm"] is None
               for r in latest.values())
    first = latest["q1"]["tiers"][0]
    assert first["output"]["states"]["end"] and first["verify"]["p_true"] == pytest.approx(0.75)
    assert latest["q1"]["slm_verify"] == first["verify"]  # the two-tier key, derived
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["sessions"][-1]["status"] == "interrupted"
    assert rec["sessions"][-1]["n_slm_first"] == 5
    # the same command resumes: no greedy tier-1 call, tier 2 on the three items left, tier 3
    # on all; then the samples of both deciding tiers
    dying.clear()
    made.clear()
    assert cli_ev.main(argv + opts) == 0
    assert [calls(made, m, "chat") for m in MODELS] == [5 * 2, 3 + 5 * 2, 5]
    assert [calls(made, m, "score") for m in MODELS] == [0, 3, 0]  # P(True) of tier 2 only
    rows = {r["id"]: r for r in runs.load_results(run_dir)}
    assert all(len(r["tiers"]) == 3 and not ev.is_pending(r) for r in rows.values())
    t = rows["q1"]["tiers"]
    assert [bool((x["output"].get("states") or {}).get("end")) for x in t] == [True, True, False]
    assert ["verify" in x for x in t] == [True, True, False]
    assert [len(x.get("samples") or []) for x in t] == [2, 2, 0]
    assert rows["q1"]["slm_samples"] == t[0]["samples"]
    assert [x["correct"] for x in t] == [False, True, True]
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["sessions"][1]["status"] == "complete"
    assert rec["sessions"][1]["n_llm_completed"] == 5
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["tiers"]["n"] == 4 and s["tiers"]["at_taus"]["pass_at_1"] == 0.75
    # a one-phase run of the same items gives the same records
    one = tmp_path / "one"
    argv_one = argv[:argv.index("--run-dir") + 1] + [str(one)] + \
        argv[argv.index("--run-dir") + 2:]
    assert cli_ev.main(argv_one + opts[1:]) == 0
    for r in runs.load_results(one):
        assert without_timing(r["tiers"]) == without_timing(rows[r["id"]]["tiers"])


def test_three_tier_evaluate_end_to_end(setup, capsys):
    argv, made, run_dir, _ = setup
    assert cli_ev.main(argv + ["--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert [calls(made, m) for m in MODELS] == [5, 5, 5]  # each tier once per item
    # items.jsonl: one record per tier (output, grade, cost, deciding confidence); no tiers.jsonl
    assert not (run_dir / "tiers.jsonl").exists()
    raw = runs.read_items(run_dir / "items.jsonl", False)
    assert len(raw) == 5 and all("slm" not in r and r["n_tiers"] == 3 for r in raw)
    rows = {r["id"]: r for r in runs.load_results(run_dir)}
    assert sorted(rows) == ["q0", "q1", "q2", "q3", "q4"]
    t = rows["q1"]["tiers"]
    assert [x["model"] for x in t] == MODELS
    assert [x["correct"] for x in t] == [False, True, True]
    assert [x["confidence"] for x in t] == [0.4, 0.8, None]
    assert [x["signal"] for x in t] == ["verbal", "verbal", None]
    assert t[1]["output"]["answer"] == "5" and t[0]["grade"] == "incorrect"
    assert all(x["usable"] and x["cost_usd"] > 0 for x in t)
    assert t[2]["cost_usd"] > t[1]["cost_usd"] > t[0]["cost_usd"]
    assert rows["q4"]["tiers"][0]["correct"] is None  # ungradable gold
    # the two-tier view (first against last), derived from the records, as a two-tier run's rows
    items = rows
    assert items["q1"]["slm"] == t[0]["output"] and items["q1"]["llm"] == t[2]["output"]
    assert (items["q1"]["slm_correct"], items["q1"]["llm_correct"]) == (False, True)
    assert "confidence" not in items["q1"]["llm"]
    # typed rows: the gradable items only
    typed = load_tier_items(run_dir)
    # lines are written as items finish (a run's files are keyed by id, not ordered)
    typed = sorted(typed, key=lambda x: x.id)
    assert [x.id for x in typed] == ["q0", "q1", "q2", "q3"]
    assert isinstance(typed[0], TierItem) and len(typed[0].tiers) == 3
    o = evaluate_taus(typed, (0.7, 0.6))
    assert o.pass_at_1 == 0.75 and o.answered == (0.25, 0.5, 0.25)
    # run.json: the tiers are part of the identity (no τ)
    rec = json.loads((run_dir / "run.json").read_text())
    assert [x["name"] for x in rec["identity"]["tiers"]] == MODELS
    assert "threshold" not in json.dumps(rec["identity"]["tiers"])
    assert rec["tiers"] == MODELS and rec["sessions"][-1]["status"] == "complete"
    assert rec["sessions"][-1]["n_generated"] == 5
    # the summary's N-tier section at the configured τ vector (0.7, 0.6)
    s = json.loads((run_dir / "summary.json").read_text())
    b = s["tiers"]
    assert b["n_tiers"] == 3 and b["models"] == MODELS and b["taus"] == [0.7, 0.6]
    assert (b["n"], b["n_ungradable"], b["ungradable_ids"]) == (4, 1, ["q4"])
    assert b["at_taus"]["pass_at_1"] == 0.75 and b["at_taus"]["answered"] == [0.25, 0.5, 0.25]
    assert b["at_taus"]["deferral_rate"] == [0.75, pytest.approx(1 / 3)]
    assert [t["alone_pass_at_1"] for t in b["per_tier"]] == [0.5, 0.5, 0.75]
    assert b["per_tier"][1]["pass_at_1_of_answers"] == 0.5  # q1 right, q3 wrong
    assert b["n_swept"] == 21 * 21 and b["pareto"]
    costs = [x["cost_usd"] for x in b["pareto"]]
    assert costs == sorted(costs)
    assert "| metric | value |" in out and "### N tiers (3): `t0` → `t1` → `t2`" in out
    assert "Cascade at τ = (0.70, 0.60): pass@1 75.0%" in out and "Pareto front of 441" in out
    assert s["run"]["models"] == {"slm": "t0", "llm": "t2"}  # the two-tier view's models
    # rerun: nothing to generate; --summarize-only at another first τ
    n = sum(len(b.calls) for _, b in made)
    assert cli_ev.main(argv) == 0 and sum(len(b.calls) for _, b in made) == n
    capsys.readouterr()
    assert cli_ev.main(argv + ["--summarize-only", "--threshold", "0.0"]) == 0
    assert "Cascade at τ = (0.00, 0.60)" in capsys.readouterr().out


def test_interrupt_and_resume_tiers_jsonl(setup, capsys):
    argv, made, run_dir, dying = setup
    n = {"n": 0}

    def dies_on_the_third_item(messages):
        n["n"] += 1
        if n["n"] == 3:  # killed while the middle tier answers the third item
            raise KeyboardInterrupt
        return reply_for(1)(messages)

    dying[1] = dies_on_the_third_item
    assert cli_ev.main(argv) == 1
    assert "interrupted: completed items are saved in" in capsys.readouterr().err
    assert [r["id"] for r in runs.load_results(run_dir)] == ["q0", "q1"]
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["sessions"][-1]["status"] == "interrupted"
    assert rec["sessions"][-1]["n_generated"] == 2
    dying.clear()
    made.clear()
    assert cli_ev.main(argv) == 0
    assert [calls(made, m) for m in MODELS] == [3, 3, 3]  # only the 3 items left
    ids = [json.loads(x)["id"] for x in (run_dir / "items.jsonl").read_text().splitlines()]
    assert ids == ["q0", "q1", "q2", "q3", "q4"]
    assert len(runs.load_results(run_dir)) == 5
    rec = json.loads((run_dir / "run.json").read_text())
    assert [x["n_generated"] for x in rec["sessions"]] == [2, 3]
    # a torn last line (a crash mid-write) is dropped and that item scored again
    path = run_dir / "items.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 30])
    made.clear()
    assert cli_ev.main(argv) == 0
    assert [calls(made, m) for m in MODELS] == [1, 1, 1]
    assert len(runs.load_results(run_dir)) == 5


def test_other_tiers_or_a_two_tier_run_are_refused(setup, tmp_path, capsys):
    argv, made, run_dir, _ = setup
    assert cli_ev.main(argv) == 0
    capsys.readouterr()
    other = tmp_path / "other.yaml"
    other.write_text(CONFIG.replace("model: t1", "model: t1b"))
    MODELS.append("t1b")
    try:
        made.clear()
        bad = list(argv)
        bad[bad.index("--config") + 1] = str(other)
        assert cli_ev.main(bad) == 2
        err = capsys.readouterr().err
        assert "different configuration" in err and "tiers.1.model: 't1' -> 't1b'" in err
        assert calls(made, "t1b") == 0
        # changing only a τ is not another run: τ is swept
        (tmp_path / "tau.yaml").write_text(CONFIG.replace("threshold: 0.6", "threshold: 0.3"))
        capsys.readouterr()
        assert cli_ev.main(argv[:3] + [str(tmp_path / "tau.yaml")] + argv[4:]) == 0
        assert "Cascade at τ = (0.70, 0.30)" in capsys.readouterr().out
    finally:
        MODELS.remove("t1b")
    # the same first and last model as a two-tier run: refused too (its identity has no tiers)
    two = ["--dataset", argv[1], "--slm-backend", "fake", "--slm", "t0", "--llm-backend",
           "fake", "--llm", "t2", "--run-dir", str(run_dir), "--no-progress"]
    assert cli_ev.main(two) == 2
    assert "tiers:" in capsys.readouterr().err


def test_fatal_tier_error_aborts_and_keeps_finished_items(setup, capsys, monkeypatch):
    argv, made, run_dir, _ = setup
    real = cli_ev.make_backend

    def broken_middle(ms, cache_dir):
        b = real(ms, cache_dir)
        if ms.model == "t1":
            b.error = BackendError("model_missing", "no weights")
        return b

    monkeypatch.setattr(cli_ev, "make_backend", broken_middle)
    assert cli_ev.main(argv) == 1
    assert "tier 2 (t1) failed on item q0: model_missing" in capsys.readouterr().err
    assert runs.load_results(run_dir) == []
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["sessions"][-1]["status"] == "aborted"


def test_summarize_tiers_by_hand_and_format():
    def row(i, *tiers):
        return {"id": i, "tiers": [{"model": f"m{k}", "correct": c, "cost_usd": cost,
                                    "confidence": conf, "usable": True, "output": {}}
                                   for k, (c, cost, conf) in enumerate(tiers)]}

    rows = [row("a", (True, 1.0, 0.9), (True, 3.0, 0.9), (True, 10.0, None)),
            row("b", (False, 1.0, 0.5), (True, 3.0, 0.8), (True, 10.0, None)),
            row("c", (False, 1.0, 0.5), (False, 3.0, 0.4), (False, 10.0, None)),
            row("d", (None, 1.0, 0.5), (False, 3.0, 0.4), (True, 10.0, None))]
    b = summary.summarize_tiers(rows, (0.7, 0.6), values=[0.0, 0.5, 1.0], n_boot=50)
    assert (b["n"], b["ungradable_ids"]) == (3, ["d"])
    at = b["at_taus"]
    assert at["pass_at_1"] == pytest.approx(2 / 3) and at["cost_usd"] == 1 + 4 + 14
    assert at["cost_fraction_of_last_only"] == pytest.approx(19 / 30)
    assert [t["cost_usd"] for t in b["per_tier"]] == [3.0, 6.0, 10.0]
    assert b["n_swept"] == 9
    # (1, 1): everything to the last tier; (0, *) keeps tier 1: cheapest
    assert b["pareto"][0]["taus"] == [0.0, 0.0] and b["pareto"][0]["cost_usd"] == 3.0
    assert b["best_within_2pt"]["pass_at_1"] >= 2 / 3 - 0.02
    text = summary.format_tiers(b)
    assert "| 2 | `m1` | 0.60 |" in text and "ungradable (excluded): d" in text
    with pytest.raises(ValueError, match="one per tier but the last"):
        summary.summarize_tiers(rows, (0.5,))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        summary.summarize_tiers(rows, (0.5, 1.5))
    assert summary.summarize_tiers([], ())["at_taus"] is None
    assert summary.recorded_taus({"settings": {"threshold": 0.4, "tiers": [
        {"threshold": None}, {"threshold": 0.2}, {}]}}, 3) == [0.4, 0.2]
    assert summary.recorded_taus(None, 4) == [0.7, 0.7, 0.7]



def test_report_has_the_n_tier_section(setup):
    from corea.eval.report import write_report

    argv, _, run_dir, _ = setup
    assert cli_ev.main(argv) == 0
    md = write_report(run_dir, n_boot=20).read_text()
    assert "## N tiers" in md and "Pareto front of 441 swept τ vectors" in md
    assert (run_dir / "report" / "tiers_pareto.html").stat().st_size > 500
    assert "(tiers_pareto.html)" in md


def test_explorer_tier_view_with_tau_vectors(setup, tmp_path):
    import gradio as gr

    from corea.ui.explorer import (INTERACTIONS, MAX_TIER_SLIDERS, ExplorerHandlers,
                                   tier_metrics_table)

    argv, _, _, _ = setup
    root = tmp_path / "runs"
    run_dir = root / "three"
    argv = argv[:argv.index("--run-dir") + 1] + [str(run_dir)] + \
        argv[argv.index("--run-dir") + 2:]
    assert cli_ev.main(argv) == 0
    assert not (run_dir / "tiers.jsonl").exists()  # the view reads the one record per tier
    h = ExplorerHandlers(None, runs_root=root)
    assert h.source_choices()[0] == ("three", "three")
    # one slider per tier but the last, at the run's configured τ, labelled with its model
    group, *sliders = h.tier_controls("three")
    assert group["visible"] is True and len(sliders) == MAX_TIER_SLIDERS
    assert [s["visible"] for s in sliders] == [True, True] + [False] * (MAX_TIER_SLIDERS - 2)
    assert [s["value"] for s in sliders[:2]] == [0.7, 0.6]
    assert sliders[1]["label"] == "τ of tier 2 (t1)"
    fig, table, status = h.tiers_view("three", [0.7, 0.6, 0.3, 0.3, 0.3])  # extras ignored
    t = dict(table)
    assert t["τ vector"] == "0.70, 0.60" and t["pass@1 (cascade at τ)"] == 0.75
    assert t["answered by tier 2 (t1)"] == 0.5 and t["deferral rate of tier 1"] == 0.75
    assert t["last tier only pass@1"] == 0.75 and 0 < t["cost vs last tier only"]
    assert "3 tiers" in status and "4 gradable item(s) of 5" in status
    assert gr.Plot().postprocess(fig).type == "altair"
    layers = {x["name"]: x for x in fig.to_dict()["layer"]}
    assert list(layers) == ["swept", "pareto", "single", "current", "current_label"]
    assert len(layers["swept"]["data"]["values"]) == 441
    assert layers["current_label"]["data"]["values"][0]["label"] == "τ = (0.70, 0.60)"
    assert dict(h.tiers_view("three", [1.0, 1.0])[1])["answered by tier 3 (t2)"] == 1.0
    # bad τ: a clear message, never a traceback
    for bad, why in (([1.5, 0.6], "not in [0, 1]"), ([float("nan"), 0.6], "not in [0, 1]"),
                     (["abc", 0.6], "not a number"), ([None, 0.6], "not a number"),
                     ([0.5], "2 value(s), got 1"), (None, "got 0")):
        fig, table, status = h.tiers_view("three", bad)
        assert (fig, table) == (None, []) and status.startswith("⚠️") and why in status
    # only listed runs; two-tier sources keep the view hidden
    assert h.tiers_view("/etc", [0.5, 0.5])[2] == "Choose one of the listed evaluation runs."
    assert h.tiers_view(str(tmp_path), [0.5, 0.5])[2].startswith("Choose one")
    assert h.tier_controls("/etc")[0]["visible"] is False
    assert h.tier_controls(INTERACTIONS)[0]["visible"] is False
    assert "no N-tier rows" in h.tiers_view(INTERACTIONS, [0.5])[2]
    two = root / "two"  # rows with only the two-tier keys, as the committed runs
    two.mkdir()
    (two / "items.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k not in ("tiers", "n_tiers")}) + "\n"
        for r in runs.load_results(run_dir)))
    assert h.tier_controls("two")[0]["visible"] is False
    assert "no N-tier rows" in h.tiers_view("two", [0.5, 0.5])[2]
    # an unreadable tiers file (of the former N-tier runner): a message
    bad_dir = root / "bad"
    bad_dir.mkdir()
    (bad_dir / "items.jsonl").write_text((run_dir / "items.jsonl").read_text())  # a listed run
    (bad_dir / "tiers.jsonl").write_text("{oops\n{\"id\": 1}\n")
    assert h.tiers_view("bad", [0.5, 0.5])[2].startswith("⚠️ Could not show the tiers")
    assert h.tier_controls("bad")[0]["visible"] is False
    # the two-tier view of the run (first tier against last) still works
    assert "**three**: 5 row(s)" in h.view("three", 0.7)[4]
    with pytest.raises(ValueError):
        tier_metrics_table(load_tier_items(run_dir), (0.5,))


def test_app_has_the_tier_sliders():
    import app

    from corea.ui.explorer import MAX_TIER_SLIDERS

    ids = {c["props"].get("elem_id") for c in app.demo.config["components"]
           if c.get("props", {}).get("elem_id")}
    assert {f"corea-explorer-tier-tau-{k + 1}" for k in range(MAX_TIER_SLIDERS)} <= ids
    assert {"corea-explorer-tiers", "corea-explorer-tier-table"} <= ids


def test_a_cut_off_last_tier_answer_falls_back_to_the_latest_usable_one():
    """N-tier scoring grades the final answer (corea.policy.final_tier), as the live cascade
    shows it: a last tier cut off at its budget keeps the middle tier's usable answer (or,
    without one, the first tier's). Before, the cut-off last-tier output was graded."""
    from corea.eval.tiers import TierScore, final

    def item(i, usable_mid, last_usable, last_correct):
        return TierItem(f"q{i}", (TierScore(True, 1.0, 0.2), TierScore(True, 2.0, 0.1,
                                                                       usable=usable_mid),
                                  TierScore(last_correct, 4.0, usable=last_usable)))

    cut = item(0, True, False, False)     # last cut off and wrong: the middle answer (right)
    ok = item(1, True, True, False)       # last usable and wrong: graded wrong
    cut_mid = item(2, False, False, False)  # middle not an answer either: the first tier's
    o = evaluate_taus([cut, ok, cut_mid], (0.5, 0.5))
    assert [final(x, (0.5, 0.5)) for x in (cut, ok, cut_mid)] == [1, 2, 0]
    assert o.pass_at_1 == pytest.approx(2 / 3)
    assert o.answered == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert o.deferral_rate == (1.0, 1.0)        # every item still went to the last tier
    assert o.cost_usd == pytest.approx(3 * 7.0)  # and paid all three
    none = TierItem("n", (TierScore(False, 1.0, 0.9, usable=False),
                          TierScore(True, 4.0, usable=False)))
    assert final(none, (0.5,)) is None and evaluate_taus([none], (0.5,)).pass_at_1 == 0.0


def test_a_folder_of_the_former_n_tier_runner_is_read_and_adopted(setup, capsys):
    """A run folder made by the former N-tier runner (``tiers.jsonl`` with every tier, and an
    ``items.jsonl`` of first-against-last rows derived from it) is read from its tiers rows, and
    the next run of the folder adopts them into ``items.jsonl`` without generating again."""
    argv, made, run_dir, _ = setup
    assert cli_ev.main(argv) == 0
    capsys.readouterr()
    rows = runs.load_results(run_dir)
    (run_dir / "tiers.jsonl").write_text("".join(json.dumps(
        {k: v for k, v in r.items() if k in ("id", "dataset", "question", "choices", "gold",
                                              "tiers", "wall_s", "done_at")}) + "\n"
        for r in rows))
    (run_dir / "items.jsonl").write_text("".join(json.dumps(
        {k: v for k, v in r.items() if k not in ("tiers", "n_tiers")}) + "\n" for r in rows))
    again = runs.load_results(run_dir)
    assert [len(r["tiers"]) for r in again] == [3] * 5 and again == rows
    made.clear()
    assert cli_ev.main(argv) == 0 and sum(len(b.calls) for _, b in made) == 0
    assert not (run_dir / "tiers.jsonl").exists()
    assert all(len(r["tiers"]) == 3 and "slm" not in r
               for r in runs.read_items(run_dir / "items.jsonl", False))
    assert runs.load_results(run_dir) == rows
    assert "Cascade at τ = (0.70, 0.60): pass@1 75.0%" in capsys.readouterr().out
