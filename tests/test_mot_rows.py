"""``mot`` rows made offline from a ``cot`` run and a ``pot`` run equal what a live ``mot`` tier
records for the same replies (the merge rule is the live tier's), keep the grade of the solution
whose answer they take, and refuse runs that do not match."""

from __future__ import annotations

import json

import pytest

from corea import cli
from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.config import Settings
from corea.datasets import Item
from corea.eval.harness import score_item
from corea.eval.records import with_views
from corea.eval.mot_rows import SourceMismatch, combine_row, combine_runs
from corea.eval.runs import load_results, write_json

ITEM = Item(id="1", question="What is 17 * 23?", answer="391", choices=None, dataset="t")
KEYS = ("answer", "answer_method", "confidence", "agreement", "cot_answer", "program",
        "program_output", "program_error", "completion_tokens", "prompt_tokens", "text")


def replies(cot_answer: str, printed: str):
    """A backend that answers the chain-of-thought prompt in prose and the program prompt (its
    system message asks for Python) with a program."""
    def reply(msgs):
        if "Python" in msgs[0].content:
            return f"Here.\n\n```python\nprint({printed})\n```\nConfidence: 0.3"
        return f"Step by step. \\boxed{{{cot_answer}}}\nConfidence: 0.2"
    return reply


def row(solve: str, cot_answer: str, printed: str) -> dict:
    s = Settings(db_url="sqlite://", threshold=0.5, confidence_source="verbal").with_solve(solve)
    slm = FakeBackend(replies(cot_answer, printed), continuations=[" 0.5"], model_name="slm")
    llm = FakeBackend(replies("391", "391"), model_name="llm")
    return with_views(score_item(ITEM, Cascade(slm, llm, s)))  # with the two-tier keys


@pytest.mark.parametrize("cot_answer,printed", [("391", "17 * 23"), ("390", "17 * 23"),
                                                ("391", "1 / 0"), ("12", "12")])
def test_offline_mot_rows_equal_the_live_mot_tier(cot_answer, printed):
    live = row("mot", cot_answer, printed)
    merged = combine_row(row("cot", cot_answer, printed), row("pot", cot_answer, printed))
    for side in ("slm", "llm"):
        assert merged[side].keys() == live[side].keys()
        keys = [k for k in KEYS if k in live[side]]
        assert {k: merged[side][k] for k in keys} == {k: live[side][k] for k in keys}, side
        assert merged[f"{side}_correct"] == live[f"{side}_correct"]


def test_the_grade_is_the_one_of_the_solution_whose_answer_is_taken():
    cot, pot = row("cot", "391", "1 / 0"), row("pot", "391", "1 / 0")
    merged = combine_row(cot, pot)  # the program fails: the CoT answer (right) is taken
    assert (merged["slm"]["answer"], merged["slm_correct"], pot["slm_correct"]) == ("391", True,
                                                                                    False)
    assert merged["slm"]["program_error"].startswith("exception")


def write_run(path, solve: str, rows: list[dict], **identity) -> None:
    path.mkdir()
    ident = {"dataset": "gsm8k", "split": "train", "limit": len(rows), "prompt_version": solve,
             "slm": {"model": "slm", "max_new_tokens": 512, "temperature": 0.0},
             "llm": {"model": "llm", "max_new_tokens": 512, "temperature": 0.0}, **identity}
    if solve == "pot":
        for side in ("slm", "llm"):
            ident[side] = {**ident[side], "solve": "pot"}
    write_json(path / "run.json", {"identity": ident, "models": {"slm": "slm"}, "sessions": []})
    (path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_combine_runs_writes_a_mot_run_of_the_shared_items(tmp_path, capsys):
    cot = [row("cot", "391", "17 * 23"), {**row("cot", "390", "17 * 23"), "id": "2"}]
    pot = [row("pot", "391", "17 * 23")]
    write_run(tmp_path / "cot", "cot", cot)
    write_run(tmp_path / "pot", "pot", pot)
    out = tmp_path / "mot"
    assert cli.main(["combine-mot", "--cot", str(tmp_path / "cot"), "--pot",
                     str(tmp_path / "pot"), "--run-dir", str(out)]) == 0
    assert "1 items" in capsys.readouterr().out
    rows = load_results(out)
    assert [r["id"] for r in rows] == ["1"] and rows[0]["slm"]["agreement"] is True
    run = json.loads((out / "run.json").read_text())
    assert run["identity"]["slm"]["solve"] == "mot" and run["identity"]["split"] == "train"
    assert run["combined_from"]["pot_prompt_version"] == "pot"
    assert cli.main(["combine-mot", "--cot", str(tmp_path / "cot"), "--pot",
                     str(tmp_path / "pot"), "--run-dir", str(out)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("change,message", [({"split": "test"}, "split"),
                                            ({"slm": {"model": "other"}}, "slm")])
def test_runs_that_differ_are_refused(tmp_path, change, message):
    write_run(tmp_path / "cot", "cot", [row("cot", "391", "17 * 23")])
    write_run(tmp_path / "pot", "pot", [row("pot", "391", "17 * 23")], **change)
    with pytest.raises(SourceMismatch, match=message):
        combine_runs(tmp_path / "cot", tmp_path / "pot", tmp_path / "mot")
    assert not (tmp_path / "mot").exists()


def test_two_cot_runs_are_refused(tmp_path):
    write_run(tmp_path / "a", "cot", [row("cot", "391", "17 * 23")])
    write_run(tmp_path / "b", "cot", [row("cot", "391", "17 * 23")])
    with pytest.raises(SourceMismatch, match="a cot run and a pot run"):
        combine_runs(tmp_path / "a", tmp_path / "b", tmp_path / "mot")
