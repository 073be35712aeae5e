"""The Ask tab's "Solve by" choice (issue 29, "In the app and the API") on scripted backends: the
choice reaches every tier as the API's ``corea.solve`` does, a ``pot`` turn shows its program,
what it printed and "computed by a program", the log and History say how each tier solved, a
value that is not a choice (as a script could send to the public endpoint) is refused in the chat
with nothing lost, and the explorer can decide with the CoT/PoT agreement."""

from __future__ import annotations

import doctest
import json
from types import SimpleNamespace

import pytest

import corea.ui.solve_choice as solve_choice
from corea.backends.fake import FakeBackend
from corea.config import Settings
from corea.service import CoreaService
from corea.types import SOLVE_MODES, check_solve
from corea.ui.ask import AskHandlers
from corea.ui.explorer import ExplorerHandlers
from corea.ui.history import HistoryHandlers
from corea.ui.solve_choice import (AS_CONFIGURED, REFUSED, default_solve, measured,
                                   requested_solve, solve_choices, solve_note)

PROGRAM = "a = 17\nb = 23\nprint(a * b)"


def reply(msgs) -> str:
    """The SLM: a program when asked for one (the program-of-thought prompt names Python), else
    a chain of thought whose answer is wrong, so the two modes are told apart."""
    if "Python" in msgs[0].content:
        return f"Here is the program.\n\n```python\n{PROGRAM}\n```\nConfidence: 0.9"
    return "Step by step. \\boxed{390}\nConfidence: 0.9"


def service(tmp_path, **kw) -> CoreaService:
    s = Settings(threshold=0.5, db_url=f"sqlite:///{tmp_path / 'log.sqlite'}",
                 confidence_source="verbal", **kw)
    return CoreaService(s, slm=FakeBackend(reply, continuations=[" 0.5"], model_name="slm"),
                        llm=FakeBackend(["\\boxed{5}"], model_name="llm"))


def req(session="visitor"):
    return SimpleNamespace(session_hash=session)


def ask(h, question="What is 17 * 23?", solve=None, session="visitor"):
    """The handler called as the browser and gradio_client call it: the four inputs, the
    request, then the "Solve by" value."""
    return list(h.respond(question, [], 0.5, [], req(session), solve))


def texts(history) -> list[str]:
    return [m["content"] for m in history]


def test_a_python_program_turn_shows_the_program_its_output_and_the_card(tmp_path):
    svc = service(tmp_path)
    assert svc.settings.tier_solves() == ["cot", "cot"]  # the configured default
    outs = ask(AskHandlers(svc), solve="pot")
    history, _, details, _, my_ids = outs[-1]
    assert outs[0][1] == ""  # accepted: the box is cleared
    assert "**Final answer:** 391" in details and "by **slm**" in details
    reasoning = history[1]["content"]
    assert f"```python\n{PROGRAM}\n```" in reasoning
    block = next(m for m in history if (m.get("metadata") or {}).get("title", "")
                 .startswith("🧮 Program run — small model"))
    assert "```text\n391\n```" in block["content"]
    assert any("**Small model's answer (computed by its program):** 391" in t
               for t in texts(history))
    assert any("answer **computed by a program**" in t for t in texts(history))  # the card
    # recorded with the turn: the tier's row says it solved with a program, and History shows it
    row = svc.store.list_interactions(limit=None)[0]
    assert row["id"] == my_ids[0][0]
    slm = row["tiers"][0]
    assert (slm["extra"]["solve"], slm["answer_method"], slm["answer"]) == ("pot", "program", "391")
    table, _ = HistoryHandlers(svc).history_table("All", "All", "", req())
    assert "slm: 391 · by a program (kept) ✓" in table[0][-1]


def test_no_choice_and_the_default_choice_solve_as_configured(tmp_path):
    svc = service(tmp_path)
    h = AskHandlers(svc)
    for solve in (None, default_solve(svc.settings.tier_solves())):
        history, _, details, _, _ = ask(h, solve=solve)[-1]
        assert "**Final answer:** 390" in details  # the chain of thought's answer
        assert not any("computed by a program" in t for t in texts(history))
    rows = svc.store.list_interactions(limit=None)
    assert [r["tiers"][0]["extra"].get("solve") for r in rows] == [None, None]  # cot
    table, _ = HistoryHandlers(svc).history_table("All", "All", "", req())
    assert table[0][-1].startswith("slm: 390 (kept) ✓")


def test_both_and_compare_records_the_agreement_and_history_shows_it(tmp_path):
    svc = service(tmp_path)
    history, _, details, _, _ = ask(AskHandlers(svc), solve="mot")[-1]
    assert any("computed by a program" in t and "disagreed" in t for t in texts(history))
    slm = svc.store.list_interactions(limit=None)[0]["tiers"][0]
    assert (slm["extra"]["solve"], slm["extra"]["agreement"]) == ("mot", False)
    table, _ = HistoryHandlers(svc).history_table("All", "All", "", req())
    assert "slm: 391 · words + program, disagreed" in table[0][-1]


HOSTILE = ["python", "POT", " pot", "pot; import os", "<img src=x onerror=alert(1)>",
           "x" * 100_000, ["pot"], {"solve": "pot"}, 3, True, 0.5]


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: type(v).__name__ + str(v)[:12])
def test_a_value_that_is_not_a_choice_is_refused_in_the_chat_and_nothing_is_lost(tmp_path,
                                                                                value):
    svc = service(tmp_path, questions_per_minute=1)
    h = AskHandlers(svc)
    outs = ask(h, "What is 17 * 23?", solve=value)
    assert len(outs) == 1
    history, box, _, _, my_ids = outs[0]
    assert box == "What is 17 * 23?" and my_ids == []  # the question stays in the box
    assert texts(history) == [REFUSED] and "Reasoning in words" in REFUSED
    assert "onerror" not in json.dumps(history) and "xxxxxxxx" not in json.dumps(history)
    assert svc.slm.calls == [] and svc.store.list_interactions(limit=None) == []
    # the visitor's one question a minute was not spent on the refusal
    _, _, details, _, _ = ask(h, "What is 17 * 23?", solve="pot")[-1]
    assert "**Final answer:** 391" in details


def test_one_rule_checks_the_mode_everywhere():
    for mode in SOLVE_MODES:
        assert check_solve(mode) == requested_solve(mode) == mode
    assert requested_solve(None) is requested_solve("") is requested_solve(AS_CONFIGURED) is None
    for value in HOSTILE:
        with pytest.raises(ValueError, match="must be one of cot, pot, mot"):
            requested_solve(value)
        with pytest.raises(ValueError, match="--solve must be one of"):
            check_solve(value, "--solve")
        with pytest.raises(ValueError, match="solve must be one of"):
            Settings().with_solve(value)
    with pytest.raises(ValueError):
        CoreaService(Settings(db_url="sqlite://"), slm=FakeBackend(), llm=FakeBackend()).ask(
            "q?", solve="python")


def test_the_choices_and_the_default_follow_the_configured_tiers():
    labels = ["Reasoning in words", "A Python program", "Both, and compare"]
    assert solve_choices(["cot", "cot"]) == list(zip(labels, SOLVE_MODES))
    assert default_solve(["cot", "cot"]) == "cot" and default_solve(["pot"] * 3) == "pot"
    mixed = solve_choices(["pot", "cot"])  # tiers configured differently: kept as they are
    assert mixed[0] == ("As configured (a program, words)", AS_CONFIGURED)
    assert mixed[1:] == list(zip(labels, SOLVE_MODES))
    assert default_solve(["pot", "cot"]) == AS_CONFIGURED


def test_the_note_quotes_the_committed_measurement(tmp_path):
    report = json.loads(solve_choice.MEASURED.read_text())
    got = measured()
    assert [m.mode for m in got] == list(SOLVE_MODES)
    note = solve_note(got)
    for m in got:
        test = report["modes"][m.mode]["llm_only"]["test"]
        assert (m.pass_at_1, m.seconds) == (test["pass_at_1"], test["seconds_per_question"])
        assert f"{m.pass_at_1:.1%}" in note and f"{m.seconds:.1f} s" in note
    fastest = min(got, key=lambda m: m.seconds).mode
    assert note.startswith({"cot": "Words", "pot": "A program", "mot": "Both"}[fastest])
    assert f"{report['items']['test']} GSM8K test questions, 2-vCPU machine" in note
    (tmp_path / "bad.json").write_text("{")
    assert measured(tmp_path / "bad.json") == measured(tmp_path / "none.json") == []
    assert "%" not in solve_note([])
    assert doctest.testmod(solve_choice).failed == 0


def test_the_app_serves_the_choice_with_the_configured_default():
    import app

    params = app.demo.get_api_info()["named_endpoints"]["/respond"]["parameters"]
    solve = next(p for p in params if p["label"] == "Solve by")
    assert solve["parameter_default"] == default_solve(app.service.settings.tier_solves())
    assert solve["type"]["enum"] == list(SOLVE_MODES)


def test_the_explorer_decides_with_the_agreement(tmp_path):
    """Issue 29: "The explorer can switch the deciding signal to agreement" (a ``mot`` run)."""
    rows = []
    for i in range(10):
        agree = i % 2 == 0
        rows.append({"id": f"i{i}", "slm_correct": agree, "llm_correct": True,
                     "slm": {"answer": "1", "confidence": 0.9, "finish_reason": "stop",
                             "prompt_tokens": 30, "completion_tokens": 50, "solve": "mot",
                             "agreement": agree, "cot_answer": "1" if agree else "2"},
                     "llm": {"answer": "1", "finish_reason": "stop", "prompt_tokens": 30,
                             "completion_tokens": 90}})
    (tmp_path / "mot-run").mkdir()
    (tmp_path / "mot-run" / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    h = ExplorerHandlers(None, runs_root=tmp_path)
    assert "agreement" in [n for _, n in h.signal_choices("mot-run")]
    assert "CoT/PoT agreement" in h.view("mot-run", 0.5, signal="agreement")[4]
    summary = dict(h.update_tau("mot-run", 0.5, signal="agreement")[1])
    assert summary["deferral rate"] == 0.5  # exactly the items whose two answers disagree
