"""Threshold explorer (corea.ui.explorer, corea.eval.charts), its app tab handlers and the report (corea.eval.report).
No browser, no model: hand-made tables, a temporary SQLite log and synthetic run folders."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from corea.ui import explorer
from corea.events import CascadeResult, DecisionInfo, ModelOutput
from corea.eval.charts import (confidence_histogram, frontier_chart, label_counts,
                               reliability_chart, rows_from_run)
from corea.eval.runs import list_runs
from corea.store.labels import label_interaction, rows_from_interactions
from corea.ui.explorer import INTERACTIONS, ExplorerHandlers, metrics_table, slider_value
from corea.store.storage import Store

# id 1-4: both labels; 5: SLM label only; 6: no label. Costs: SLM 1, LLM 10 (USD).
ROWS = [
    {"id": 1, "confidence": 0.9, "slm_correct": True, "llm_correct": True},
    {"id": 2, "confidence": 0.8, "slm_correct": False, "llm_correct": True},
    {"id": 3, "confidence": 0.3, "slm_correct": False, "llm_correct": True},
    {"id": 4, "confidence": None, "slm_correct": True, "llm_correct": False},
    {"id": 5, "confidence": 0.6, "slm_correct": True, "llm_correct": None},
    {"id": 6, "confidence": 0.5, "slm_correct": None, "llm_correct": None},
]
ROWS = [{**r, "slm_cost": 1.0, "llm_cost": 10.0} for r in ROWS]


def _layers(chart) -> dict:
    return {layer["name"]: layer for layer in chart.to_dict()["layer"]}


# ----------------------------------------------------------------------------- pure functions


def test_label_counts():
    assert label_counts(ROWS) == {"n": 6, "n_both": 4, "n_slm": 5, "n_unlabelled": 1,
                                  "n_no_confidence": 1}


def test_metrics_table_by_hand():
    t = dict((k, v) for k, v in metrics_table(ROWS, 0.7))
    # τ=0.7 defers item 3 (0.3) and item 4 (no confidence): 2 of 4
    assert t["threshold τ"] == 0.7
    assert t["items with both labels (cascade metrics)"] == 4
    assert t["items with an SLM label (calibration)"] == 5
    assert t["excluded: no label"] == 1
    assert t["deferral rate"] == 0.5
    assert t["pass@1 (cascade at τ)"] == 0.5          # 1 ✓ (SLM), 2 ✗ (SLM), 3 ✓, 4 ✗ (LLM)
    assert t["cost (USD)"] == 24.0                     # 4 x 1 + 2 x 10
    assert t["cost vs LLM-only"] == 0.6                # 24 / 40
    assert t["SLM-only pass@1"] == 0.5 and t["LLM-only pass@1"] == 0.75
    assert t["random routing pass@1 (same deferral)"] == 0.625
    # calibration on (0.9 ✓), (0.8 ✗), (0.3 ✗), (0.6 ✓): ECE (0.1 + 0.8 + 0.3 + 0.4) / 4
    assert t["ECE-10 (SLM)"] == pytest.approx(0.4)
    assert t["Brier (SLM)"] == pytest.approx(0.225)    # (0.01 + 0.64 + 0.09 + 0.16) / 4
    assert t["AUROC (SLM)"] == pytest.approx(0.75)     # 3 of 4 pairs ordered
    assert t["SLM answers without confidence"] == 1
    empty = dict((k, v) for k, v in metrics_table([ROWS[5]], 0.5))
    assert empty["pass@1 (cascade at τ)"] is None and empty["ECE-10 (SLM)"] is None


def test_frontier_chart_layers_and_data():
    chart = frontier_chart(ROWS, 0.7)
    layers = _layers(chart)
    assert list(layers) == ["cascade", "random", "baselines", "current", "current_label"]
    assert layers["cascade"]["mark"]["type"] == "line"
    # thresholds 0, 0.3, 0.8, 0.9 and just above 0.9
    sweep = layers["cascade"]["data"]["values"]
    assert [round(r["threshold"], 6) for r in sweep] == [0.0, 0.3, 0.8, 0.9, 0.9]
    assert layers["random"]["mark"]["strokeDash"] == [6, 4]
    rnd = layers["random"]["data"]["values"]
    assert len(rnd) == 11 and rnd[0]["pass_at_1"] == 0.5 and rnd[-1]["pass_at_1"] == 0.75
    base = {r["series"]: r for r in layers["baselines"]["data"]["values"]}
    assert base["SLM only"]["x"] == pytest.approx(0.1) and base["SLM only"]["pass_at_1"] == 0.5
    assert base["LLM only"]["x"] == 1.0 and base["LLM only"]["pass_at_1"] == 0.75
    (cur,) = layers["current"]["data"]["values"]
    assert (cur["threshold"], cur["pass_at_1"], cur["x"]) == (0.7, 0.5, pytest.approx(0.6))
    assert layers["current"]["mark"]["size"] > 200 and cur["series"] == "current τ"
    assert layers["current_label"]["data"]["values"][0]["label"] == "τ = 0.70"
    assert layers["cascade"]["encoding"]["x"]["title"] == "cost (share of LLM-only)"
    # free models: x falls back to the deferral rate
    free = [{**r, "slm_cost": 0.0, "llm_cost": 0.0} for r in ROWS]
    lay = _layers(frontier_chart(free, 0.7))
    assert lay["current"]["data"]["values"][0]["x"] == 0.5
    assert lay["cascade"]["encoding"]["x"]["title"].startswith("deferral rate")
    with pytest.raises(ValueError):
        frontier_chart([ROWS[4], ROWS[5]], 0.5)


def test_reliability_chart_and_histogram():
    rel = reliability_chart(ROWS)
    layers = _layers(rel)
    assert list(layers) == ["diagonal", "bins", "points"]
    bins = layers["bins"]["data"]["values"]
    assert [(b["lo"], b["count"], b["accuracy"]) for b in bins] == \
        [(0.3, 1, 0.0), (0.6, 1, 1.0), (0.8, 1, 0.0), (0.9, 1, 1.0)]
    assert "ECE-10 = 0.400" in rel.to_dict()["title"]["subtitle"]
    hist = confidence_histogram(ROWS, n_bins=10).to_dict()
    assert hist["mark"]["type"] == "bar" and hist["name"] == "histogram"
    data = {(d["lo"], d["outcome"]): d["count"] for d in hist["data"]["values"]}
    assert data == {(0.3, "incorrect"): 1, (0.6, "correct"): 1, (0.8, "incorrect"): 1,
                    (0.9, "correct"): 1}
    assert "1 without one" in hist["title"]["subtitle"]
    with pytest.raises(ValueError):
        reliability_chart([ROWS[3], ROWS[5]])  # only an SLM label without confidence
    with pytest.raises(ValueError):
        confidence_histogram([ROWS[5]])


def test_slider_value_rounds_up_to_the_step():
    assert slider_value(np.nextafter(0.3, 1.0)) == 0.31
    assert slider_value(0.7) == 0.7 and slider_value(0.8744) == 0.88
    assert slider_value(np.nextafter(1.0, 2.0)) == 1.0 and slider_value(0.0) == 0.0


# ----------------------------------------------------------------------------- interactions


def _inter(**kw) -> dict:
    base = {"id": 1, "confidence": 0.9, "slm_answer": "4", "llm_model": None, "llm_answer": None,
            "final_answer": "4", "final_model": "slm", "errors": [], "cost_usd": 0.001,
            "extra": {"slm_cost_usd": 0.001}, "rating_thumbs": None, "rating_correction": None}
    return {**base, **kw}


def _deferred(**kw) -> dict:
    return _inter(**{"confidence": 0.2, "llm_model": "llm", "llm_answer": "5",
                     "final_answer": "5", "final_model": "llm",
                     "extra": {"slm_cost_usd": 0.001, "llm_cost_usd": 0.01}, **kw})


@pytest.mark.parametrize("row, slm, llm, basis", [
    (_inter(rating_thumbs="up"), True, None, "thumbs up"),
    (_inter(rating_thumbs="down"), False, None, "thumbs down"),
    (_inter(rating_correction=" 5 "), False, None, "correction"),
    (_inter(rating_thumbs="down", rating_correction="4"), True, None, "correction"),
    (_deferred(rating_thumbs="up"), False, True, "thumbs up"),
    (_deferred(rating_thumbs="down"), None, False, "thumbs down"),
    (_deferred(rating_thumbs="down", slm_answer="5"), False, False, "thumbs down"),
    (_deferred(rating_correction="4"), True, False, "correction"),
    (_deferred(rating_thumbs="up", errors=["llm error: timeout"], final_answer="4",
               final_model="slm"), True, None, "thumbs up"),
    (_inter(rating_thumbs="up", slm_answer=None, final_answer=None), None, None, None),
    (_inter(rating_thumbs=None), None, None, None),  # comment only
])
def test_label_interaction_rules(row, slm, llm, basis):
    out = label_interaction(row)
    assert (out["slm_correct"], out["llm_correct"], out["label_basis"]) == (slm, llm, basis)
    assert out["confidence"] == row["confidence"]


def _result(confidence, slm_answer, defer, llm_answer=None) -> CascadeResult:
    slm = ModelOutput(model="slm", text=f"\\boxed{{{slm_answer}}}", answer=slm_answer,
                      answer_method="free", confidence=confidence, cost_usd=0.001)
    llm = (ModelOutput(model="llm", text=llm_answer, answer=llm_answer, cost_usd=0.01)
           if defer else None)
    dec = DecisionInfo(defer=defer, reason="low_confidence" if defer else "confident",
                       confidence=confidence, threshold=0.7, message="")
    src = llm if defer else slm
    return CascadeResult(question="q", threshold=0.7, slm=slm, llm=llm, decision=dec,
                         final_answer=src.answer, final_model=src.model, cost_usd=0.011)


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'log.sqlite'}")
    ids = [s.log_interaction(_result(0.9, "4", False), "s"),
           s.log_interaction(_result(0.3, "4", True, "5"), "s"),
           s.log_interaction(_result(0.8, "7", False), "s"),
           s.log_interaction(_result(0.6, "2", False), "s")]
    s.add_rating(ids[0], thumbs="up")
    s.add_rating(ids[1], thumbs="down", correction="4")
    s.add_rating(ids[2], comment="no idea")  # no label
    # id 4 unrated: not listed
    yield s
    s.close()


def test_rows_from_interactions(store):
    rows = {r["id"]: r for r in rows_from_interactions(store)}
    assert sorted(rows) == [1, 2, 3]
    assert (rows[1]["slm_correct"], rows[1]["llm_correct"]) == (True, None)
    assert (rows[2]["slm_correct"], rows[2]["llm_correct"]) == (True, False)
    assert rows[2]["llm_cost"] == 0.01 and rows[2]["slm_cost"] == 0.001
    assert (rows[3]["slm_correct"], rows[3]["llm_correct"], rows[3]["label_basis"]) == \
        (None, None, None)
    memo: dict = {}
    rows_from_interactions(store, memo=memo)
    assert len(memo) == 3 and rows_from_interactions(store, memo=memo) == \
        rows_from_interactions(store)


# ----------------------------------------------------------------------------- runs


def _write_run(run_dir: Path, n: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "items.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            c = float(np.round(rng.uniform(), 2))
            row = {"id": str(i), "question": f"q{i}", "gold": "1",
                   "slm": {"confidence": c if i % 10 else None, "cost_usd": 0.001,
                           "answer": "1"},
                   "llm": {"cost_usd": 0.01, "answer": "1"},
                   "slm_correct": bool(rng.uniform() < c), "slm_grade": "correct",
                   "llm_correct": None if i == 3 else bool(rng.uniform() < 0.9),
                   "llm_grade": "ungradable" if i == 3 else "correct"}
            f.write(json.dumps(row) + "\n")
    return run_dir


def test_rows_from_run_and_list_runs(tmp_path):
    root = tmp_path / "runs"
    _write_run(root / "b-run")
    _write_run(root / "a-run", n=5)
    (root / "empty").mkdir()
    (root / "empty" / "items.jsonl").write_text("")
    (root / "no-items").mkdir()
    assert list_runs(root) == [str(root / "a-run"), str(root / "b-run")]
    assert list_runs(tmp_path / "missing") == []
    rows = rows_from_run(root / "b-run")
    assert len(rows) == 40 and rows[0]["label_basis"] == "grader"
    assert rows[0]["confidence"] is None and rows[3]["llm_correct"] is None
    assert (rows[1]["slm_cost"], rows[1]["llm_cost"]) == (0.001, 0.01)


# ----------------------------------------------------------------------------- tab handlers


def test_handlers_on_a_run(tmp_path):
    import gradio as gr

    run = str(_write_run(tmp_path / "runs" / "r1"))
    h = ExplorerHandlers(None, runs_root=tmp_path / "runs")
    assert h.source_choices() == [("r1", "r1"), ("Logged interactions (rated)", INTERACTIONS)]
    assert h.default_source() == "r1"  # a name: no server path on the page
    assert "**r1**: 40 row(s)" in h.view("r1", 0.5)[4]
    fig, rel, hist, table, status = h.view(run, 0.5)
    assert type(fig).__name__ == "LayerChart" and type(rel).__name__ == "LayerChart"
    assert type(hist).__name__ == "Chart"
    assert "**r1**: 40 row(s); 39 with both labels" in status
    # what Gradio does with the outputs
    assert gr.Plot().postprocess(fig).type == "altair"
    assert gr.Dataframe(headers=explorer.METRICS_HEADERS).postprocess(table).data[0] == \
        ["threshold τ", 0.5]
    fig2, table2, _ = h.update_tau(run, 0.9)
    assert dict(table2)["threshold τ"] == 0.9
    v, msg = h.paper_tau(run, 0.5)
    assert msg.startswith("Paper rule") and v == slider_value(v) and 0.5 < v <= 1.0
    v, msg = h.deferral_tau(run, 0.5)
    assert "30% deferral" in msg and "deferral 3" in msg  # at least 30% deferred
    v, msg = h.certified_tau(run, 0.5)
    # too few items (the harm loss needs ≥ 114 with no harm at α=0.02, δ=0.1): LLM-only
    assert v == 1.0 and "no τ certified on 39 item(s)" in msg and "114 items" in msg
    assert "Slider set to 1.00" in msg
    assert h.use_tau(np.nextafter(0.3, 1.0), 0.7) == (0.31, "The Ask tab now uses τ = 0.31.")
    assert h.use_tau(None, 0.7)[0] == 0.7
    upd, msg = h.refresh()
    assert upd["value"] == "r1" and "1 evaluation run(s)" in msg


def test_handlers_empty_states_and_faults(tmp_path, store):
    h = ExplorerHandlers(None, runs_root=tmp_path / "nothing")
    assert h.source_choices() == [("Logged interactions (rated)", INTERACTIONS)]
    out = h.view(None, 0.7)
    assert out[:4] == (None, None, None, []) and "No evaluation runs" in out[4]
    assert "Logging is off" in h.view(INTERACTIONS, 0.7)[4]
    assert h.paper_tau(INTERACTIONS, 0.7)[0] == 0.7
    empty = Store(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    h_empty = ExplorerHandlers(SimpleNamespace(store=empty, logging_error=None), tmp_path)
    assert "No rated interactions yet" in h_empty.view(INTERACTIONS, 0.7)[4]
    empty.close()
    # rated interactions: 2 SLM labels, 1 with both -> charts where possible, never a raise
    h_log = ExplorerHandlers(SimpleNamespace(store=store, logging_error=None), tmp_path)
    fig, rel, hist, table, status = h_log.view(INTERACTIONS, 0.7)
    assert "3 row(s); 1 with both labels (cascade), 2 with an SLM label" in status
    assert "1 excluded (no label)" in status and fig is not None and rel is not None
    bad = tmp_path / "runs" / "bad"
    bad.mkdir(parents=True)
    (bad / "items.jsonl").write_text("{not json\n{\"id\": 1}\n")
    # a folder outside runs_root is refused (a visitor cannot name a server path) ...
    assert h.view(str(bad), 0.7)[4] == "Choose one of the listed evaluation runs."
    assert "listed" in h.view("/etc", 0.7)[4]
    h = ExplorerHandlers(None, runs_root=tmp_path / "runs")  # ... one inside is read
    out = h.view(str(bad), 0.7)
    assert out[:4] == (None, None, None, []) and out[4].startswith("⚠️")
    assert h.update_tau(str(bad), 0.7)[2].startswith("⚠️")
    assert h.certified_tau(str(bad), 0.7)[0] == 0.7
    # a folder without item rows is not a listed run
    assert h.view(str(tmp_path / "runs" / "nope"), 0.7)[4] == \
        "Choose one of the listed evaluation runs."


def test_app_tab_is_wired():
    import app

    cfg = app.demo.config
    by_elem = {c["props"].get("elem_id"): c["id"] for c in cfg["components"]
               if c.get("props", {}).get("elem_id")}
    tau, ask = by_elem["corea-explorer-threshold"], by_elem["corea-threshold"]
    labels = [c["props"].get("label") for c in cfg["components"] if c.get("type") == "tabitem"]
    assert "Threshold explorer" in labels
    # "Use this τ" writes the Ask tab's slider
    assert any(d["inputs"][:1] == [tau] and ask in d["outputs"] for d in cfg["dependencies"])


# ----------------------------------------------------------------------------- report


def test_report_writes_markdown_and_charts(tmp_path):
    from corea import cli
    from corea.eval import report

    run = _write_run(tmp_path / "run")
    out = tmp_path / "out"
    assert cli.main(["report", str(run), "--out", str(out), "--n-boot", "20"]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| metric | value |" in md and "items (gradable / total) | 39 / 40" in md
    assert "τ = LLM pass@1" in md and "Learn-then-Test" in md
    for name in ("frontier", "reliability", "confidence_histogram"):
        assert (out / f"{name}.html").stat().st_size > 500
        assert f"({name}.html)" in md
        assert (out / f"{name}.png").exists() == report._png_available()
    assert cli.main(["report", str(tmp_path / "missing")]) == 2


def test_switching_the_deciding_signal_moves_the_frontier(tmp_path):
    import json

    from corea.signals import hidden
    from corea.signals.probe import fit_probe

    root = tmp_path / "runs"
    (root / "sig").mkdir(parents=True)
    rows = []
    for i in range(40):
        ok = i % 2 == 0
        v = [float(i % 7), 3.0 if ok else -3.0]
        rows.append({"id": str(i), "slm_correct": ok, "llm_correct": True,
                     "slm": {"confidence": 0.9, "answer": "1", "finish_reason": "stop",
                             "cost_usd": 1e-5,
                             "signals": {"solution_prob": 0.8 if ok else 0.3},
                             "states": {"end": hidden.encode(np.array(v, dtype="float32"))}},
                     "llm": {"cost_usd": 3e-5}, "slm_verify": {"p_true": 0.6 if ok else 0.4}})
    (root / "sig" / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    h = ExplorerHandlers(None, runs_root=root)
    names = [n for _, n in h.signal_choices("sig")]
    assert names[0] == "verbal" and {"tokprob", "p_true"} <= set(names)
    assert "probe" not in names and "oracle" not in names  # no fitted probe; no oracles
    verbal = dict(h.update_tau("sig", 0.5)[1])
    tokprob = dict(h.update_tau("sig", 0.5, signal="tokprob")[1])
    # stated 0.9 everywhere keeps all; the token probability defers the wrong half
    assert verbal["deferral rate"] == 0.0 and tokprob["deferral rate"] == 0.5
    assert tokprob["pass@1 (cascade at τ)"] == 1.0
    v, msg = h.deferral_tau("sig", 0.5, signal="tokprob")
    assert "30% deferral" in msg
    # an unknown or unavailable signal falls back to the stated confidence
    assert dict(h.update_tau("sig", 0.5, signal="probe")[1])["deferral rate"] == 0.0
    # the service's fitted probe makes "probe" a choice
    probe = fit_probe(rows, slm="toy")
    h2 = ExplorerHandlers(SimpleNamespace(probe=probe, calibrator=None), runs_root=root)
    assert "probe" in [n for _, n in h2.signal_choices("sig")]
    assert dict(h2.update_tau("sig", 0.5, signal="probe")[1])["deferral rate"] == 0.5
    assert h.signal_choices(INTERACTIONS) == [(h.signal_choices(None)[0])]


# ----------------------------------------------------------------------------- issue 33


def test_the_committed_packed_runs_are_listed_on_a_fresh_deploy(tmp_path):
    """A fresh clone has an empty runs/ and the evaluation runs committed packed
    (data/generations/*/items.jsonl.gz); the explorer listed none of them."""
    from corea.eval.runs import items_file

    committed = [p.name for p in sorted(explorer.COMMITTED_RUNS.iterdir())
                 if p.is_dir() and items_file(p) is not None]
    assert "gsm8k-test-200" in committed  # the repository's own data
    h = ExplorerHandlers(None, runs_root=tmp_path / "runs",
                         committed_root=explorer.COMMITTED_RUNS)
    choices = h.source_choices()
    assert [v for _, v in choices] == committed + [INTERACTIONS]
    assert ("gsm8k-test-200 (committed)", "gsm8k-test-200") in choices
    default = h.default_source()
    assert default in committed and "train" not in default  # opens on test items
    assert default == "gsm8k-test-200"  # chain of thought, the app's default, before pot/mot runs
    status = h.view(default, 0.7)[4]
    k = int(status.split("row(s); ")[1].split(" with both")[0])
    assert k > 0 and "**Deciding signal:** " in status, status
    # a run of this deployment with the same name wins over the committed one
    _write_run(tmp_path / "runs" / "gsm8k-test-200", n=5)
    assert h.source_choices()[[v for _, v in h.source_choices()].index(
        "gsm8k-test-200")][0] == "gsm8k-test-200"
    assert "**gsm8k-test-200**: 5 row(s)" in h.view("gsm8k-test-200", 0.7)[4]


def test_a_packed_run_reads_like_a_plain_one(tmp_path):
    from corea.eval.runs import pack_run

    run = _write_run(tmp_path / "runs" / "packed")
    plain = ExplorerHandlers(None, runs_root=tmp_path / "runs").view("packed", 0.5)[4]
    pack_run(run)
    (run / "items.jsonl").unlink()
    assert list_runs(tmp_path / "runs") == [str(run)]
    assert ExplorerHandlers(None, runs_root=tmp_path / "runs").view("packed", 0.5)[4] == plain


def test_a_new_run_appears_without_a_manual_rescan(tmp_path):
    """The tab's timer and tab-select call rescan: a new run is offered, the chosen source
    stays, and an unchanged list is a no-op update (an open dropdown is left alone)."""
    _write_run(tmp_path / "runs" / "a-run", n=5)
    h = ExplorerHandlers(None, runs_root=tmp_path / "runs")
    upd, shown = h.rescan("a-run", None)
    assert upd["choices"] == h.source_choices() and "value" not in upd
    upd, shown = h.rescan("a-run", shown)
    assert upd == {"__type__": "update"}
    _write_run(tmp_path / "runs" / "b-run", n=5)
    upd, shown = h.rescan("a-run", shown)
    assert ("b-run", "b-run") in upd["choices"] and "value" not in upd  # a-run stays chosen
    upd, msg = h.refresh("a-run")  # the button keeps the choice too
    assert upd["value"] == "a-run" and "2 evaluation run(s)" in msg
    import shutil

    shutil.rmtree(tmp_path / "runs" / "a-run")
    upd, _ = h.rescan("a-run", shown)
    assert upd["value"] == "b-run"  # a vanished source falls back to the default


def test_the_status_names_the_signal_and_explains_an_slm_only_run(tmp_path):
    run = tmp_path / "runs" / "slm-only"
    run.mkdir(parents=True)
    with open(run / "items.jsonl", "w", encoding="utf-8") as f:
        for i in range(6):
            f.write(json.dumps({"id": str(i), "slm": {"confidence": i / 10, "answer": "1",
                                                     "cost_usd": 0.001},
                                "slm_correct": i % 2 == 0, "llm_correct": None}) + "\n")
    h = ExplorerHandlers(None, runs_root=tmp_path / "runs")
    status = h.view("slm-only", 0.7)[4]
    assert "0 with both labels" in status and "6 with an SLM label" in status
    assert "no large-model answers (the small model only)" in status
    assert "calibration metrics use its 6 graded small-model answers" in status
    assert "**Deciding signal:** " in status and "stated" in status.split("Deciding signal")[1]
    assert "**Deciding signal:** " in h.update_tau("slm-only", 0.3)[2]


def test_the_explorer_warns_of_a_dead_threshold(tmp_path):
    """At a τ above every item's confidence the run is deferred whole: the status says so and
    gives the τ range that splits it; a splitting τ says nothing."""
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    with open(run / "items.jsonl", "w", encoding="utf-8") as f:
        for i, c in enumerate([0.2, 0.3, 0.5, None]):
            f.write(json.dumps({"id": str(i), "slm": {"confidence": c, "answer": "1"},
                                "llm": {"answer": "1"},
                                "slm_correct": True, "llm_correct": True}) + "\n")
    h = ExplorerHandlers(None, runs_root=tmp_path / "runs")
    status = h.view("r", 0.7)[4]
    assert "Dead threshold" in status and "all 4 items would be deferred" in status
    assert "τ in [0, 0.5] splits them" in status  # one item has no confidence
    assert "Dead threshold" not in h.update_tau("r", 0.3)[2]
    assert "Dead threshold" in h.update_tau("r", 0.9)[2]


def test_break_even_deferral_in_money_and_seconds(tmp_path):
    from corea.eval.routing import BreakEven, break_even_deferral, break_even_text, pair_break_even
    from corea.timing import TimeModel, TokenTime

    assert break_even_deferral(1.0, 4.0) == 0.75
    assert break_even_deferral(5.0, 4.0) == 0.0 and break_even_deferral(0.0, 4.0) == 1.0
    assert break_even_deferral(1.0, 0.0) is None
    tm = TimeModel(models={"s": TokenTime(completion_s_per_token=0.05),
                           "l": TokenTime(completion_s_per_token=0.1)})
    items = [{"slm": {"model": "s", "cost_usd": 1e-6, "prompt_tokens": 10,
                      "completion_tokens": 200},
              "llm": {"model": "l", "cost_usd": 4e-6, "prompt_tokens": 10,
                      "completion_tokens": 150}},
             {"slm": {"model": "s", "cost_usd": 1e-6}, "llm": None}]
    be = pair_break_even(items, tm)
    assert be.n == 1 and be.money == pytest.approx(0.75)
    assert (be.slm_s, be.llm_s) == pytest.approx((10.0, 15.0))
    assert be.seconds == pytest.approx(1 / 3)
    text = break_even_text(be)
    assert "money: **75%**" in text and "time: **33%**" in text
    assert "time: —" in break_even_text(pair_break_even(items, None))
    assert "money: never" in break_even_text(BreakEven(1, 2.0, 1.0, None, None))
    assert pair_break_even(items[1:], tm) is None and break_even_text(None) == ""


def test_the_explorer_shows_the_break_even_rate_of_a_run(tmp_path):
    _write_run(tmp_path / "runs" / "r1")
    h = ExplorerHandlers(None, runs_root=tmp_path / "runs")
    # SLM $0.001 and LLM $0.01 per item: break-even at 90% deferral; no model names, so no seconds
    assert "money: **90%**" in h.break_even("r1") and "time: —" in h.break_even("r1")
    assert h.break_even(INTERACTIONS) == "" and h.break_even("nope") == ""
    assert h.break_even(None) == ""


def test_metrics_table_gives_seconds_from_the_time_model_on_token_counts():
    from corea.eval.charts import flat_rows
    from corea.timing import TimeModel, TokenTime

    tm = TimeModel(models={"s": TokenTime(overhead_s=1.0, completion_s_per_token=0.1),
                           "l": TokenTime(overhead_s=2.0, completion_s_per_token=0.2)})

    def item(i, conf, ok):
        return {"id": i, "slm_correct": ok, "llm_correct": True,
                "slm": {"model": "s", "answer": "1", "finish_reason": "stop", "confidence": conf,
                        "prompt_tokens": 5, "completion_tokens": 10},
                "llm": {"model": "l", "answer": "1", "finish_reason": "stop",
                        "prompt_tokens": 5, "completion_tokens": 10}}

    rows = flat_rows([item(1, 0.9, True), item(2, 0.1, False)])
    t = dict(metrics_table(rows, 0.5, tm))
    # item 1 kept: 1 + 10·0.1 = 2 s; item 2 deferred: 2 + (2 + 10·0.2) = 6 s; LLM-only 4 + 4 s
    assert t["seconds per item (time model)"] == pytest.approx(4.0)
    assert t["time vs LLM-only (time model)"] == pytest.approx(1.0)
    t = dict(metrics_table(rows, 0.5))  # no time model: no seconds
    assert t["seconds per item (time model)"] is None
    assert t["time vs LLM-only (time model)"] is None
