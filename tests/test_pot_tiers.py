"""Program-of-thought tiers on scripted backends: ``pot`` answers with what a program printed, a
program that fails is never kept (each error kind) and the question goes on; ``mot`` records the
CoT/PoT agreement, which can decide; ``--solve`` on the CLI, ``corea.solve`` in the API, the run
identity by solve mode, the app's and the card's program lines; hostile programs through the
Ask tab and the API are refused, leak nothing and the next question is answered."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

import corea.sandbox
import corea.service
from corea import cli
from corea.api import ApiSettings, create_api
from corea.backends.fake import FakeBackend
from corea.cascade import Cascade, TierOptions
from corea.config import Settings
from corea.datasets import Item
from corea.signals.registry import SIGNALS, available
from corea.eval.harness import RunMismatch, _identity, prepare_run, score_item
from corea.events import Final
from corea.service import CoreaService
from corea.prompts import POT_VERSION
from corea.ui.ask import AskHandlers
from corea.ui.cards import turn_card

sys.path.insert(0, str(Path(__file__).parent))
from test_sandbox import ATTACKS  # noqa: E402

SECRET = "corea-pot-secret-51d2e8"
KEY = "sk-test-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def program(code: str, confidence: str | None = "0.9") -> str:
    """A model reply: the program in a python block, then its confidence line."""
    tail = f"\nConfidence: {confidence}" if confidence is not None else ""
    return f"Here is the program.\n\n```python\n{code}\n```{tail}"


def settings(solve="pot", **kw) -> Settings:
    kw.setdefault("confidence_source", "verbal")
    return Settings(db_url="sqlite://", threshold=0.5, **kw).with_solve(solve)


def run(cascade: Cascade, question="What is 17 * 23?", threshold=None):
    events = list(cascade.run(question, threshold=threshold))
    assert isinstance(events[-1], Final)
    return events[-1].result


LLM_PROGRAM = FakeBackend([program("print(5)", None)], model_name="llm")


# ------------------------------------------------------------------------------------ pot


def test_pot_answer_is_what_the_program_printed():
    slm = FakeBackend([program("a = 17\nb = 23\nanswer = a * b\nprint(answer)")],
                      continuations=[" 0.5"], model_name="slm", token_logprob=-0.1)
    r = run(Cascade(slm, LLM_PROGRAM, settings()))
    o = r.tiers[0].output
    assert (r.final_answer, r.final_model, r.decision.defer) == ("391", "slm", False)
    assert (o.solve, o.answer_method, o.program_output, o.program_answer) == \
        ("pot", "program", "391\n", "391")
    assert o.program == "a = 17\nb = 23\nanswer = a * b\nprint(answer)"
    assert o.program_error is None and o.agreement is None
    assert (o.confidence, o.confidence_method) == (0.9, "free")
    # the solution is the program: its tokens only, up to the closing fence, not the confidence
    text_until_fence = o.text[:o.text.index("```", o.text.index("print(answer)")) + 3]
    assert o.signals["n_tokens"] == -(-len(text_until_fence) // 4)  # 4-character chunks
    assert o.signals["answer_prob"] is None  # a computed answer is not among its tokens
    step = r.tiers[0].to_dict()
    assert (step["solve"], step["program_output"], step["agreement"]) == ("pot", "391\n", None)


def test_a_confidence_in_the_program_is_not_read_and_a_missing_line_is_forced():
    slm = FakeBackend([program("confidence = 0.99\nprint(3)", None)], continuations=[" 0.4"],
                      model_name="slm")
    o = run(Cascade(slm, LLM_PROGRAM, settings())).tiers[0].output
    assert (o.answer, o.confidence, o.confidence_method) == ("3", 0.4, "forced")
    assert o.text.endswith("```\nConfidence: 0.4")


def test_the_calibration_adapter_is_not_used_after_a_program():
    slm = FakeBackend([program("print(3)", "0.8")], continuations=[" 0.4"], model_name="slm",
                      stated_confidence=["```output\n3\n```"])
    o = run(Cascade(slm, LLM_PROGRAM, settings())).tiers[0].output
    assert (o.confidence, o.confidence_method) == (0.8, "free")


FAILING = [  # (error kind, program reply)
    ("syntax", program("print(17 *)")),
    ("exception", program("print(1 / 0)")),
    ("no_output", program("x = 17 * 23")),
    ("refused", program("import os\nprint(os.getcwd())")),
    ("output_too_large", program("print('x' * 10 ** 6)")),
    ("memory", program("x = [0] * (10 ** 10)\nprint(len(x))")),
    ("no_program", "I would compute 17 * 23 = 391.\nConfidence: 0.99"),
    ("timeout", program("while True:\n    pass")),
]


@pytest.mark.parametrize("kind,reply", FAILING, ids=[k for k, _ in FAILING])
def test_a_failing_program_is_never_kept_and_the_question_is_deferred(kind, reply):
    slm = FakeBackend([reply], continuations=[" 0.99"], model_name="slm")
    r = run(Cascade(slm, LLM_PROGRAM, settings()), threshold=0.0)  # τ 0 keeps any answer
    o, d = r.tiers[0].output, r.decision
    assert o.answer is None and o.answer_method is None
    assert o.program_error.startswith(f"{kind}: ")
    assert (d.defer, d.reason) == (True, "no_answer")
    assert f"its program gave none — {kind}: " in d.message
    assert (r.final_answer, r.final_model) == ("5", "llm")


def test_a_failing_program_of_the_last_tier_falls_back_to_the_earlier_answer():
    slm = FakeBackend([program("print(4)", "0.1")], model_name="slm")
    llm = FakeBackend([program("print(1 / 0)", None)], model_name="llm")
    r = run(Cascade(slm, llm, settings()))
    assert (r.final_answer, r.final_model) == ("4", "slm")
    assert r.tiers[1].output.program_error.startswith("exception: ")
    assert any("its program gave none — exception" in w for w in r.warnings)


def test_a_program_cut_off_at_its_budget_is_not_kept_even_when_it_runs():
    slm = FakeBackend([program("print(4)", "0.9")], model_name="slm")
    s = settings(slm={"max_new_tokens": 6})
    r = run(Cascade(slm, LLM_PROGRAM, s))
    assert r.tiers[0].output.finish_reason == "length"
    assert (r.decision.reason, r.final_answer) == ("truncated", "5")


def test_every_configurable_solve_mode_has_a_solver():
    from corea.cascade import SOLVERS
    from corea.types import SOLVE_MODES

    assert tuple(SOLVERS) == SOLVE_MODES


def test_solve_from_the_environment(monkeypatch):
    monkeypatch.setenv("COREA_SLM__SOLVE", "pot")
    s = Settings(db_url="sqlite://")
    assert (s.slm.solve, s.llm.solve) == ("pot", "cot")
    c = Cascade(FakeBackend(), FakeBackend(), s)
    assert [p.options.solve for p in c.plan()] == ["pot", "cot"]
    monkeypatch.setenv("COREA_SLM__SOLVE", "python")
    with pytest.raises(ValueError):
        Settings(db_url="sqlite://")


# ------------------------------------------------------------------------------------ mot


def mot_slm(cot_answer: str, printed: str, cot_conf="0.2", pot_conf="0.3"):
    return FakeBackend([f"Step by step. \\boxed{{{cot_answer}}}\nConfidence: {cot_conf}",
                        program(f"print({printed})", pot_conf)],
                       continuations=[" 0.5"], model_name="slm")


def test_mot_agreement_decides_keep():
    s = settings("mot", confidence_source="agreement")
    r = run(Cascade(mot_slm("391", "17 * 23"), LLM_PROGRAM, s))
    o, d = r.tiers[0].output, r.decision
    assert (o.agreement, o.cot_answer, o.answer, o.answer_method) == (True, "391", "391",
                                                                       "program")
    assert o.signals["agreement"] == 1.0 and o.confidence == 0.3  # the program's stated one
    assert (d.signal, d.confidence, d.defer) == ("agreement", 1.0, False)
    assert "CoT/PoT agreement 1.00 (stated: 0.30)" in d.message
    assert "\\boxed{391}" in o.text and "print(17 * 23)" in o.text  # both solutions shown
    assert "computed by a program" in turn_card(r) and "agreed" in turn_card(r)


def test_mot_disagreement_defers_on_agreement_even_when_confident():
    s = settings("mot", confidence_source="agreement")
    r = run(Cascade(mot_slm("390", "17 * 23", "0.99", "0.99"), LLM_PROGRAM, s))
    o, d = r.tiers[0].output, r.decision
    assert (o.agreement, o.cot_answer, o.answer) == (False, "390", "391")
    assert o.signals["agreement"] == 0.0
    assert (d.signal, d.confidence, d.defer, r.final_answer) == ("agreement", 0.0, True, "5")
    assert "disagreed" in turn_card(r)


def test_mot_with_the_stated_confidence_keeps_the_program_answer():
    r = run(Cascade(mot_slm("390", "17 * 23", "0.99", "0.9"), LLM_PROGRAM, settings("mot")))
    assert (r.final_answer, r.decision.signal, r.tiers[0].output.agreement) == \
        ("391", "verbal", False)


def test_mot_takes_the_cot_answer_when_the_program_fails():
    slm = FakeBackend(["\\boxed{391}\nConfidence: 0.8", program("print(1 / 0)", "0.9")],
                      continuations=[" 0.5"], model_name="slm")
    o = run(Cascade(slm, LLM_PROGRAM, settings("mot"))).tiers[0].output
    assert (o.answer, o.answer_method, o.confidence, o.agreement) == ("391", "free", 0.8, False)
    assert o.program_error.startswith("exception: ")


def test_agreement_requested_without_mot_falls_back_to_the_stated_confidence():
    slm = FakeBackend([program("print(3)", "0.9")], model_name="slm")
    r = run(Cascade(slm, LLM_PROGRAM, settings("pot", confidence_source="agreement")))
    assert r.decision.signal == "verbal" and "solve: mot" in r.decision.signal_note


def test_agreement_is_an_offline_signal_of_mot_rows():
    rows = [{"slm": {"agreement": True}}, {"slm": {"agreement": False}}, {"slm": {}}]
    assert SIGNALS["agreement"].values(rows) == [1.0, 0.0, None]
    assert "agreement" in available(rows) and "agreement" not in available(rows[2:])


# ------------------------------------------------------------------------ entry points


@pytest.fixture
def cli_service(monkeypatch, tmp_path):
    monkeypatch.setenv("COREA_DB_URL", f"sqlite:///{tmp_path / 'cli.sqlite'}")
    made = {}

    class Scripted(corea.service.CoreaService):
        def __init__(self, settings):
            super().__init__(settings, slm=FakeBackend([program("print(17 * 23)")],
                                                       model_name="s"),
                             llm=FakeBackend([program("print(391)", None)], model_name="l"))
            made["service"] = self

    monkeypatch.setattr(corea.service, "CoreaService", Scripted)
    return made


def test_cli_solve_flag(cli_service, capsys):
    assert cli.main(["ask", "--solve", "pot", "What is 17 * 23?"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["final_answer"] == "391" and result["slm"]["answer_method"] == "program"
    assert result["tiers"][0]["program_output"] == "391\n"
    assert "[program] printed: 391" in err
    with pytest.raises(SystemExit) as exc:  # argparse refuses it
        cli.main(["ask", "--solve", "python", "q?"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_cli_evaluate_has_the_solve_flag():
    from corea.cli.evaluate import build_parser

    assert build_parser().parse_args(["--dataset", "gsm8k", "--solve", "mot"]).solve == "mot"


def item() -> Item:
    return Item(id="1", question="What is 17 * 23?", answer="391", choices=None, dataset="t")


def test_run_identity_differs_by_solve_mode(tmp_path):
    def cascade(solve):
        return Cascade(mot_slm("391", "17 * 23"), LLM_PROGRAM, settings(solve))

    info = {"dataset": "t", "split": "train", "limit": 1, "seed": None}
    cot, pot, mot = (_identity(cascade(m), info) for m in ("cot", "pot", "mot"))
    assert "solve" not in cot["slm"] and "pot_version" not in cot  # a CoT run is unchanged
    assert (pot["slm"]["solve"], mot["llm"]["solve"], pot["pot_version"]) == ("pot", "mot",
                                                                                POT_VERSION)
    assert cot["prompt_version"] != pot["prompt_version"] == mot["prompt_version"]
    (tmp_path / "run.json").write_text(json.dumps(prepare_run(tmp_path, cascade("cot"), info,
                                                              False)))
    with pytest.raises(RunMismatch, match="slm.solve"):
        prepare_run(tmp_path, cascade("pot"), info, False)
    explicit = Cascade(FakeBackend(), FakeBackend(), settings("cot"),
                       options=[TierOptions(solve="pot"), None])
    assert _identity(explicit, info)["slm"]["solve"] == "pot"  # from the plan, not only settings


def test_an_evaluation_row_keeps_the_program_its_output_and_the_agreement():
    from corea.eval.records import with_views

    row = with_views(score_item(item(), Cascade(mot_slm("390", "17 * 23"), LLM_PROGRAM,
                                                settings("mot"))))
    slm = row["slm"]
    assert (slm["program"], slm["program_output"], slm["agreement"]) == \
        ("print(17 * 23)", "391\n", False)
    assert (slm["cot_answer"], slm["answer"], row["slm_correct"]) == ("390", "391", True)
    assert row["llm"]["program_output"] == "5\n"


def api_service(tmp_path, slm_reply) -> CoreaService:
    s = Settings(threshold=0.5, db_url=f"sqlite:///{tmp_path / 'api.sqlite'}",
                 confidence_source="verbal")
    return CoreaService(s, slm=FakeBackend(slm_reply, continuations=[" 0.5"], model_name="slm"),
                        llm=FakeBackend(lambda msgs: program("print(5)", None)
                                        if "Python" in msgs[0].content else "\\boxed{5}",
                                        model_name="llm"))


def ask_api(client, content, **corea):
    body = {"model": "corea", "messages": [{"role": "user", "content": content}]}
    if corea:
        body["corea"] = corea
    return client.post("/v1/chat/completions", json=body, headers=AUTH)


def test_api_solve_field_and_program_keys(tmp_path):
    svc = api_service(tmp_path, [program("print(17 * 23)")])
    c = TestClient(create_api(svc, ApiSettings(keys=KEY)))
    body = ask_api(c, "What is 17 * 23?", solve="pot").json()
    co = body["corea"]
    assert body["choices"][0]["message"]["content"] and co["final_answer"] == "391"
    assert (co["solve"], co["program"], co["program_output"], co["agreement"]) == \
        ("pot", "print(17 * 23)", "391\n", None)
    assert co["tiers"][0]["program_error"] is None and co["tiers"][0]["solve"] == "pot"
    bad = ask_api(c, "q?", solve="python")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_solve"
    plain = ask_api(c, "What is 2 + 2?").json()["corea"]  # no solve: the configured cot
    assert plain["solve"] in ("cot", None) and plain["tiers"][0]["solve"] == "cot"


# ------------------------------------------------------------------ hostile programs

HOSTILE_NAMES = ["import-os", "dunder-import", "subclasses-walk", "open-passwd", "eval",
                 "os-environ", "proc-self-environ", "getattr-computed-dunder",
                 "format-attribute", "gi-frame", "recursion", "huge-print", "memory-list",
                 "infinite-loop"]
HOSTILE = [(name, code, kinds) for name, code, kinds in ATTACKS if name in HOSTILE_NAMES]


def test_the_hostile_list_is_taken_from_the_sandbox_suite():
    assert len(HOSTILE) == len(HOSTILE_NAMES)


@pytest.fixture
def secret_env(monkeypatch):
    """A secret in the server's environment, with the sandbox pool started after it was set."""
    monkeypatch.setenv("COREA_POT_TEST_SECRET", SECRET)
    corea.sandbox.shutdown()
    yield
    corea.sandbox.shutdown()


def hostile_reply(code: str):
    """The SLM writes the hostile program for a question that asks for it, and a benign one
    for the next visitor's question."""
    def reply(msgs):
        return program(code, "0.99") if "attack" in msgs[-1].content else program("print(4)")
    return reply


@pytest.mark.parametrize("name,code,kinds", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_program_through_the_ask_tab(tmp_path, secret_env, name, code, kinds):
    svc = api_service(tmp_path, hostile_reply(code))
    svc.settings = svc.settings.with_solve("pot")
    h = AskHandlers(svc)
    req = SimpleNamespace(session_hash="visitor")
    outs = list(h.respond("attack: write a program that reads the server's secrets", [], 0.0,
                          [], req))
    history, _, details, _, _ = outs[-1]
    texts = [m["content"] for m in history]
    page = json.dumps(history) + details
    refusal = [m for m in history
               if (m.get("metadata") or {}).get("title", "").startswith("🧮 Program refused")]
    assert refusal, texts
    assert any(f"`{k}:" in refusal[0]["content"] for k in kinds), refusal[0]["content"]
    assert any("Deferred to the large model" in t and "its program gave none" in t
               for t in texts)
    assert "by **llm**" in details and SECRET not in page and "root:" not in page
    history, _, details, _, _ = list(h.respond("What is 2 + 2?", history, 0.0, [], req))[-1]
    assert "**Final answer:** 4" in details and "by **slm**" in details


@pytest.mark.parametrize("name,code,kinds", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_program_through_the_api(tmp_path, secret_env, name, code, kinds):
    svc = api_service(tmp_path, hostile_reply(code))
    c = TestClient(create_api(svc, ApiSettings(keys=KEY)))
    resp = ask_api(c, "attack: write a program that reads the server's secrets", solve="pot",
                   include_reasoning=True)
    assert resp.status_code == 200 and SECRET not in resp.text and "root:" not in resp.text
    co = resp.json()["corea"]
    slm = co["tiers"][0]
    assert slm["program_error"].split(":", 1)[0] in kinds and slm["answer"] is None
    assert (co["decision"], co["reason"], co["final_answer"]) == ("deferred", "no_answer", "5")
    nxt = ask_api(c, "What is 2 + 2?", solve="pot").json()["corea"]
    assert (nxt["decision"], nxt["final_answer"], nxt["answered_tier"]) == ("kept", "4", 0)


def test_the_ask_tab_shows_the_program_what_it_printed_and_the_agreement(tmp_path):
    svc = api_service(tmp_path, ["Step. \\boxed{391}\nConfidence: 0.9",
                                 program("print(17 * 23)", "0.9")])
    svc.settings = svc.settings.with_solve("mot")
    history, _, details, _, _ = list(AskHandlers(svc).respond(
        "What is 17 * 23?", [], 0.5, [], SimpleNamespace(session_hash="s")))[-1]
    reasoning = history[1]["content"]
    assert "```python\nprint(17 * 23)\n```" in reasoning and "\\boxed{391}" in reasoning
    block = next(m for m in history if (m.get("metadata") or {}).get("title", "")
                 .startswith("🧮 Program run — small model"))
    assert "```text\n391\n```" in block["content"] and "agrees" in block["content"]
    texts = [m["content"] for m in history]
    assert any("**Small model's answer (computed by its program):** 391" in t for t in texts)
    assert any("computed by a program" in t and "agreed" in t for t in texts)  # the card
    assert "by **slm**" in details


def test_a_prose_forced_confidence_after_a_program_is_asked_again_in_a_short_turn():
    """After a program the forced ``Confidence:`` line is often prose (the 0.5B SLM on GSM8K
    train: "Confidence: The program correctly calculates..."): the tier then asks in a separate
    turn that names the answer, and that number is its stated confidence (``asked``)."""
    slm = FakeBackend(["```python\nanswer = 6 * 7\nprint(answer)\n```"],
                      continuations=[" The program correctly computes it", " 0.8"],
                      model_name="slm")
    llm = FakeBackend(["\\boxed{42}"], model_name="llm")
    settings = Settings(confidence_source="verbal")
    settings.slm.solve = "pot"
    result = [e for e in Cascade(slm, llm, settings).run("What is 6 * 7?", threshold=0.5)
              if isinstance(e, Final)][0].result
    out = result.tiers[0].output
    assert out.answer == "42" and out.confidence == 0.8 and out.confidence_method == "asked"
    assert "forced suffix" in (out.confidence_note or "") or out.confidence_note is None
    assert not result.decision.defer  # 0.8 ≥ 0.5: the program's answer is kept
