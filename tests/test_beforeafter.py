"""Before/after comparison of two runs' SLM (corea.eval.beforeafter): matching, paired metrics, the
McNemar test and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from corea import metrics
from corea.cli.beforeafter import main
from corea.eval.beforeafter import compare, format_table, match, mcnemar_p


def row(i, correct, conf):
    return {"id": f"q{i}", "slm_correct": correct,
            "slm": {"confidence": conf, "answer": "1"}}


def test_match_keeps_items_graded_in_both_in_before_order():
    before = [row(1, True, .9), row(2, None, .5), row(3, False, .2), row(4, True, .8)]
    after = [row(4, False, .1), row(3, True, .7), row(2, True, .6)]
    b, a = match(before, after)
    assert [r["id"] for r in b] == [r["id"] for r in a] == ["q3", "q4"]
    with pytest.raises(ValueError):
        match([row(1, True, .9)], [row(2, True, .9)])


def test_metrics_match_corea_metrics_and_deltas_are_after_minus_before():
    rng = np.random.default_rng(0)
    y0 = rng.random(60) < 0.3
    y1 = y0.copy()
    y1[:6] = True  # some fixed items
    c0 = np.full(60, 0.9)
    c1 = np.clip(0.3 + 0.4 * y1 + rng.normal(0, 0.1, 60), 0, 1)
    before = [row(i, bool(y0[i]), float(c0[i])) for i in range(60)]
    after = [row(i, bool(y1[i]), float(c1[i])) for i in range(60)]
    after[5]["slm"]["confidence"] = None  # one without confidence
    for i, r in enumerate(after):  # the trained SLM writes its confidence line on 2 of 3 items
        r["slm"]["confidence_method"] = "free" if i % 3 else "forced"
    res = compare(before, after, n_boot=200)
    m = res["metrics"]
    assert res["n"] == 60
    assert m["pass_at_1"]["before"] == pytest.approx(y0.mean())
    assert m["pass_at_1"]["delta"] == pytest.approx(y1.mean() - y0.mean())
    keep = np.arange(60) != 5
    assert m["ece_10"]["after"] == pytest.approx(metrics.ece(c1[keep], y1[keep], 10))
    assert m["brier"]["before"] == pytest.approx(metrics.brier_score(c0, y0))
    assert m["auroc"]["before"] == 0.5  # one confidence for every item ranks nothing
    assert m["share_no_confidence"]["after"] == pytest.approx(1 / 60)
    assert m["share_self_written"]["before"] == 0.0
    assert m["share_self_written"]["after"] == pytest.approx(40 / 60)
    lo, hi = m["ece_10"]["delta_ci"]
    assert lo <= m["ece_10"]["delta"] <= hi and hi < 0  # calibration clearly improved
    assert res["discordant"]["broken"] == 0 and res["discordant"]["fixed"] >= 1
    table = format_table(res, "base", "trained")
    assert "| pass@1 |" in table and "McNemar" in table and "base" in table
    assert "| share with a self-written confidence | 0.0% | 66.7% | +66.7 pt [" in table


def test_identical_runs_have_zero_deltas_and_p_one():
    rows = [row(i, i % 3 == 0, (i % 10) / 10) for i in range(30)]
    res = compare(rows, rows, n_boot=100)
    for m in res["metrics"].values():
        assert m["delta"] in (0, None) and (m["delta_ci"] is None or m["delta_ci"] == [0, 0])
    assert res["mcnemar_p"] == 1.0


def test_mcnemar_exact_values():
    # 0 broken, 6 fixed: two-sided exact p = 2 * 0.5**6
    b = np.array([0] * 6 + [1] * 4)
    a = np.array([1] * 6 + [1] * 4)
    assert mcnemar_p(b, a) == pytest.approx(2 * 0.5 ** 6)
    assert mcnemar_p(a, a) == 1.0


def test_cli_prints_and_writes(tmp_path, capsys):
    for name, conf in (("a", 0.9), ("b", 0.4)):
        d = tmp_path / name
        d.mkdir()
        with open(d / "items.jsonl", "w") as f:
            for i in range(10):
                f.write(json.dumps(row(i, i < 4, conf if i % 2 else conf - 0.1)) + "\n")
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--n-boot", "50",
                 "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "| ECE (10 bins) |" in out and "| a | b |" in out
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 10
    assert main([str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err
