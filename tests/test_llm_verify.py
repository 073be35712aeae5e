"""The LLM's P(True) on the SLM's answer: the side file, its signal and what the signal costs."""

from __future__ import annotations

import json
import math

import pytest

from corea.backends.base import BackendError
from corea.backends.fake import FakeBackend
from corea.cli import main
from corea.eval.heldout_signal import signal_seconds, usd_costs
from corea.eval.llm_verify import score_llm_verify, verify_messages_of
from corea.eval.runs import LLM_VERIFY_FILE, append_json_line, load_results
from corea.prompts import LLM_SYSTEM, LLM_VERIFY_VERSION
from corea.signals.registry import SIGNALS, available
from corea.timing import TimeModel, TokenTime

TM = TimeModel(models={"s": TokenTime(overhead_s=1.0, completion_s_per_token=0.1),
                       "l": TokenTime(overhead_s=2.0, completion_s_per_token=0.2)})
PRICE = (1.0, 2.0)  # the LLM's USD per 1M prompt / completion tokens


def row(i, slm_ok, llm_ok, answer="12"):
    return {"id": f"q{i}", "question": f"How many apples? ({i})", "choices": None, "gold": "12",
            "slm_correct": slm_ok, "llm_correct": llm_ok,
            "slm": {"model": "s", "answer": answer, "text": f"Some reasoning {i}. Answer: {answer}",
                    "finish_reason": "stop", "prompt_tokens": 100, "completion_tokens": 50},
            "llm": {"model": "l", "answer": "12", "finish_reason": "stop",
                    "prompt_tokens": 40, "completion_tokens": 50}}


def _run_dir(tmp_path, rows):
    for r in rows:
        append_json_line(tmp_path / "items.jsonl", r)
    return tmp_path


def judge(messages, prefix, candidates):
    """A scripted LLM that says Yes to 12 (P 0.8) and No to anything else (P(Yes) 0.1)."""
    yes = 0.8 if "answer to this problem is 12." in messages[-1].content \
        or "final answer 12 correct" in messages[-1].content else 0.1
    return {"Yes": math.log(yes), "No": math.log(1 - yes)}


def test_p_true_is_read_once_per_item_with_an_answer_and_an_llm_grade(tmp_path):
    rows = [row(0, True, True), row(1, False, True, answer="7"), row(2, False, None),
            row(3, False, True, answer=None)]
    rows[2]["llm"] = None  # the LLM has not run
    d = _run_dir(tmp_path, rows)
    llm = FakeBackend(model_name="l", next_logprobs=judge)
    rep = score_llm_verify(d, llm, progress=False)
    assert (rep.scored, rep.total, rep.failed) == (2, 2, 0)
    lines = {ln["id"]: ln for ln in map(json.loads, (d / LLM_VERIFY_FILE).read_text().splitlines())}
    assert lines["q0"]["p_true"] == pytest.approx(0.8)
    assert lines["q1"]["p_true"] == pytest.approx(0.1)
    assert lines["q0"]["context"] == "answer" and lines["q0"]["prompt_version"] == LLM_VERIFY_VERSION
    assert lines["q0"]["prompt_tokens"] > 0  # counted by the backend (words, for the fake)
    # the LLM's own system prompt, then the question and the SLM's answer in one user turn
    msgs = [c[1] for c in llm.calls if c[0] == "score"][0]
    assert msgs[0].content == LLM_SYSTEM and msgs[1].content.startswith("How many apples? (0)")
    assert "Some reasoning" not in msgs[1].content  # context answer: not the solution
    again = score_llm_verify(d, llm, progress=False)
    assert again.scored == 0 and again.total == 2  # resumable: nothing read twice
    loaded = {r["id"]: r for r in load_results(d)}
    assert loaded["q0"]["llm_verify"]["p_true"] == pytest.approx(0.8)
    assert "llm_verify" not in loaded["q2"]


def test_the_solution_context_shows_the_slm_solution_and_a_file_keeps_one_context(tmp_path):
    d = _run_dir(tmp_path, [row(0, True, True)])
    assert "Some reasoning 0" in verify_messages_of(row(0, True, True), "solution")[1].content
    llm = FakeBackend(model_name="l", next_logprobs=judge)
    score_llm_verify(d, llm, context="solution", progress=False)
    with pytest.raises(ValueError, match="context"):
        score_llm_verify(d, llm, context="answer", progress=False)
    with pytest.raises(ValueError, match="context must be"):
        score_llm_verify(d, llm, context="vibes", progress=False)


def test_a_failed_read_is_a_line_with_its_error_and_another_llm_is_refused(tmp_path):
    d = _run_dir(tmp_path, [row(0, True, True)])
    rep = score_llm_verify(d, FakeBackend(model_name="l",
                                          error=BackendError("internal", "boom")), progress=False)
    assert rep.failed == 1
    line = json.loads((d / LLM_VERIFY_FILE).read_text().splitlines()[0])
    assert line["p_true"] is None and line["error"].startswith("internal")
    with pytest.raises(ValueError, match="not other"):
        score_llm_verify(d, FakeBackend(model_name="other", next_logprobs=judge), progress=False)


def test_the_signal_ranks_by_the_llm_judgement_and_is_charged_its_llm_call_on_every_item():
    rows = [row(0, True, True), row(1, False, True)]
    for r, p in zip(rows, (0.8, 0.1)):
        r["llm_verify"] = {"p_true": p, "context": "answer", "prompt_tokens": 60}
    sig = SIGNALS["llm_p_true"]
    assert "llm_p_true" in available(rows) and "llm_p_true" not in available([row(2, True, True)])
    assert sig.score(rows, None) == [0.8, 0.1]
    kept, deferred, llm = usd_costs(sig, rows, PRICE, ratio=0.0)
    call = 60 * 1.0 / 1e6  # free SLM; the LLM's 60 verify prompt tokens
    assert kept[0] == pytest.approx(call)
    assert deferred[0] == pytest.approx(call + llm[0])  # not the LLM's answer prompt: paid too
    secs = signal_seconds(sig, rows, TM)
    # SLM call 1 + 50·0.1 = 6; the LLM's verify call without completion: its overhead, 2 s
    assert secs.kept[0] == pytest.approx(8.0) and secs.deferred[0] == pytest.approx(8 + 12)


def test_the_command_refuses_bad_input_with_a_message(tmp_path, capsys):
    assert main(["llm-verify", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "no results" in capsys.readouterr().err
    assert main(["llm-verify", str(tmp_path), "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["llm-verify", str(tmp_path), "--context", "vibes"])
