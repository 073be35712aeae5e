"""N tiers (issue #16 §2) and the cascade's ``context`` hook, on scripted backends: settings,
the flow over three tiers (kept at tier 1, 2 or 3; a middle tier skipped; the last one failing),
event order, the log, the API's ``corea`` object, the Ask tab's blocks and the τ-vector
evaluation.

(Longer than 400 lines on purpose: one feature across every layer, sharing one scripted
three-tier cascade.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from corea.api import ApiSettings, create_api
from corea.backends.base import BackendError
from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.config import Price, Settings, load_settings
from corea.eval.tiers import (TierItem, TierScore, evaluate_taus, pareto, route,
                              single_tier, sweep, tau_grid)
from corea.events import Decision, Final, LLMStarted, TierDelta
from corea.prompts import LLM_SYSTEM, SLM_SYSTEM
from corea.service import CoreaService
from corea.store.storage import Store
from corea.types import Message
from corea.validation import InvalidQuestion

REPO = Path(__file__).resolve().parents[1]
PRICES = {"t0": Price(input_per_mtok=1.0, output_per_mtok=2.0),
          "t1": Price(input_per_mtok=3.0, output_per_mtok=6.0),
          "t2": Price(input_per_mtok=10.0, output_per_mtok=20.0)}
TIERS = [{"backend": "fake", "model": "t0", "threshold": 0.7},
         {"backend": "fake", "model": "t1", "threshold": 0.6},
         {"backend": "fake", "model": "t2"}]


def reply(answer: str, confidence: float | str) -> str:
    return f"Working it out. \\boxed{{{answer}}}\nConfidence: {confidence}"


def three(c0=0.9, c1=0.9, last="The answer is \\boxed{6}", mid_error=None, last_error=None,
          **kw):
    """A three-tier cascade: t0 answers 4, t1 answers 5, t2 answers 6 (scripted)."""
    settings = Settings(tiers=TIERS, prices=PRICES, db_url="sqlite://", use_probe=False,
                        confidence_source="verbal", **kw)
    b0 = FakeBackend([reply(4, c0)], model_name="t0")
    b1 = FakeBackend([reply(5, c1)], model_name="t1", error=mid_error)
    b2 = FakeBackend([last], model_name="t2", error=last_error)
    return Cascade(b0, b2, settings, middle=[b1]), (b0, b1, b2)


def run(cascade, q="What is 2+2?", **kw):
    results = []
    events = list(cascade.run(q, on_result=results.append, **kw))
    assert len(results) == 1 and isinstance(events[-1], Final)
    return events, results[0]


def kinds(events):
    """Event names as the two-tier design named them (a first-tier ``TierDelta``: ``SLMDelta``),
    deltas folded into one ``*`` entry, decisions with their tier."""
    out = []
    for e in events:
        name = type(e).__name__
        if name.startswith("Tier"):
            name = {"slm": "SLM", "mid": "Tier", "llm": "LLM"}[e.role] + name[4:]
        if name in ("SLMDelta", "TierDelta", "LLMDelta"):
            if out and out[-1] == name + "*":
                continue
            name += "*"
        if isinstance(e, Decision):
            name = f"Decision{e.tier}"
        out.append(name)
    return out


# ----------------------------------------------------------------------------------- settings


def test_tiers_settings_validate_and_give_slm_llm_and_thresholds(monkeypatch):
    s = Settings(tiers=TIERS, threshold=0.5)
    assert [m.name for m in s.tier_models()] == ["t0", "t1", "t2"]
    assert (s.slm.name, s.llm.name) == ("t0", "t2")
    assert s.tier_thresholds() == [0.7, 0.6]
    assert Settings(tiers=[{"model": "a"}, {"model": "b"}], threshold=0.4).tier_thresholds() \
        == [0.4]  # a tier without its own τ takes the global one
    default = Settings()
    assert default.tiers is None and default.tier_thresholds() == [default.threshold]
    assert [m.name for m in default.tier_models()] == [default.slm.name, default.llm.name]
    with pytest.raises(ValidationError, match="at least 2 tiers"):
        Settings(tiers=[{"model": "a"}])
    with pytest.raises(ValidationError, match=r"threshold must be in \[0, 1\]"):
        Settings(tiers=[{"model": "a", "threshold": 1.5}, {"model": "b"}])
    with pytest.raises(ValidationError, match="model"):
        Settings(tiers=[{"backend": "fake"}, {"model": "b"}])  # a tier names its model
    # COREA_SLM__* / COREA_LLM__* still adjust the first / last tier
    monkeypatch.setenv("COREA_TIERS", json.dumps(TIERS))
    monkeypatch.setenv("COREA_SLM__N_THREADS", "1")
    s = Settings()
    assert [m.name for m in s.tier_models()] == ["t0", "t1", "t2"]
    assert s.slm.n_threads == 1 and s.tier_models()[1].n_threads is None


def test_three_tier_recipe_loads():
    s = load_settings(REPO / "config" / "three-tiers.yaml")
    models = s.tier_models()
    assert [m.backend for m in models] == ["llamacpp", "llamacpp", "openai"]
    assert [m.model for m in models[:2]] == ["embedded:slm", "embedded:llm"]
    assert len(s.tier_thresholds()) == 2 and all(0 <= t <= 1 for t in s.tier_thresholds())
    assert models[2].base_url


# -------------------------------------------------------------------------------- the flow


def test_kept_at_the_first_tier_looks_like_two_tiers():
    cascade, (_, b1, b2) = three(c0=0.9)
    events, r = run(cascade)
    assert kinds(events) == ["SLMStarted", "SLMDelta*", "SLMDone", "Decision0", "Final"]
    assert r.decision.message.startswith("Answered by the small model — confidence 0.90")
    assert b1.calls == [] and b2.calls == [] and r.llm is None
    assert [t.index for t in r.tiers] == [0] and r.tiers[0].answered
    assert (r.answered_tier, r.final_answer, r.final_model) == (0, "4", "t0")


def test_deferred_to_the_middle_tier_which_keeps_its_answer():
    cascade, (b0, b1, b2) = three(c0=0.3, c1=0.8)
    events, r = run(cascade)
    assert kinds(events) == ["SLMStarted", "SLMDelta*", "SLMDone", "Decision0", "TierStarted",
                             "TierDelta*", "TierDone", "Decision1", "Final"]
    assert {e.tier for e in events if isinstance(e, TierDelta) and e.role == "mid"} == {1}
    assert "".join(e.text for e in events if isinstance(e, TierDelta) and e.tier == 1) == \
        r.tiers[1].output.text
    assert r.decision.message == "Deferred to tier 2 (t1) — confidence 0.30 < threshold 0.70"
    d1 = r.tiers[1].decision
    assert (d1.defer, d1.reason, d1.threshold) == (False, "confident", 0.6)
    assert d1.message == "Answered by tier 2 (t1) — confidence 0.80 ≥ threshold 0.60"
    assert b2.calls == []
    assert (r.answered_tier, r.final_answer, r.final_model) == (1, "5", "t1")
    assert r.llm is None  # the last tier did not run; the middle tier's output is in tiers
    # the middle tier was asked like the SLM (stated confidence)
    assert b1.calls[0][1][0].content == SLM_SYSTEM
    assert r.cost_usd == pytest.approx(sum(t.cost_usd for t in r.tiers)) and r.cost_usd > 0
    assert r.prompt_tokens == sum(t.output.prompt_tokens for t in r.tiers)
    assert [t.answered for t in r.tiers] == [False, True]


def test_deferred_to_the_last_tier_with_per_tier_thresholds():
    cascade, (_, _, b2) = three(c0=0.75, c1=0.65)
    events, r = run(cascade, threshold=[0.8, 0.7])  # one τ per tier but the last
    assert kinds(events) == ["SLMStarted", "SLMDelta*", "SLMDone", "Decision0", "TierStarted",
                             "TierDelta*", "TierDone", "Decision1", "LLMStarted", "LLMDelta*",
                             "LLMDone", "Final"]
    assert next(e for e in events if isinstance(e, LLMStarted)).tier == 2
    assert [t.threshold for t in r.tiers] == [0.8, 0.7, None]
    assert [t.role for t in r.tiers] == ["slm", "mid", "llm"]
    assert r.tiers[2].decision is None and b2.calls[0][1][0].content == LLM_SYSTEM
    assert (r.answered_tier, r.final_answer, r.final_model, r.status) == (2, "6", "t2", "ok")
    assert r.llm is r.tiers[2].output
    # one τ: the first tier's; the others keep their configured τ
    _, r = run(three(c0=0.75, c1=0.65)[0], threshold=0.8)
    assert [t.threshold for t in r.tiers] == [0.8, 0.6] and r.answered_tier == 1
    with pytest.raises(ValueError, match="one τ per tier but the last"):
        three()[0].run("q", threshold=[0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        three()[0].run("q", threshold=[0.5, 1.5])


def test_unreachable_middle_tier_is_skipped_with_a_warning():
    cascade, _ = three(c0=0.3, mid_error=BackendError("unreachable", "connection refused"))
    events, r = run(cascade)
    assert kinds(events)[-5:] == ["Decision1", "LLMStarted", "LLMDelta*", "LLMDone", "Final"]
    d1 = r.tiers[1].decision
    assert d1.defer and d1.reason == "slm_error"
    assert d1.message == "Skipped tier 2 (t1) — it failed (unreachable); asking tier 3 (t2)"
    assert r.warnings == [d1.message]
    assert (r.answered_tier, r.final_answer, r.status) == (2, "6", "ok")


def test_last_tier_failing_falls_back_to_the_latest_usable_answer():
    cascade, _ = three(c0=0.3, c1=0.3, last_error=BackendError("timeout", "too slow"))
    _, r = run(cascade)
    assert r.tiers[1].decision.reason == "llm_error"
    assert r.tiers[1].decision.message == \
        "Tier 3 (t2) unavailable (timeout) — showing tier 2 (t1)'s answer"
    assert r.warnings == [r.tiers[1].decision.message]
    assert (r.answered_tier, r.final_answer, r.status) == (1, "5", "ok")
    assert r.decision.reason == "low_confidence"  # the first tier's own decision
    # a cut-off last answer is not final either: the latest usable earlier answer is
    cascade, _ = three(c0=0.3, c1=0.3, last="no box here")
    _, r = run(cascade)
    assert r.tiers[1].decision.reason == "llm_no_answer" and r.answered_tier == 1
    # every tier failing is an error, like both tiers failing today
    err = BackendError("unreachable", "down")
    cascade, (b0, _, _) = three(mid_error=err, last_error=err)
    b0.error = err
    _, r = run(cascade)
    assert r.status == "error" and r.final_answer is None and r.answered_tier is None


def test_middle_tier_can_decide_on_its_token_probability():
    tiers = [dict(TIERS[0]), dict(TIERS[1], confidence_source="tokprob"), dict(TIERS[2])]
    settings = Settings(tiers=tiers, db_url="sqlite://", use_probe=False,
                        confidence_source="verbal")
    b1 = FakeBackend([reply(5, 0.99)], model_name="t1", token_logprob=-2.0)  # p ≈ 0.14
    cascade = Cascade(FakeBackend([reply(4, 0.1)], model_name="t0"),
                      FakeBackend(["\\boxed{6}"], model_name="t2"), settings, middle=[b1])
    _, r = run(cascade)
    d1 = r.tiers[1].decision
    assert d1.signal == "tokprob" and d1.defer and d1.verbal_confidence == 0.99
    assert r.answered_tier == 2


def test_two_tiers_record_their_steps_too():
    settings = Settings(threshold=0.7, db_url="sqlite://", use_probe=False,
                        confidence_source="verbal")
    cascade = Cascade(FakeBackend([reply(4, 0.3)], model_name="s"),
                      FakeBackend(["\\boxed{5}"], model_name="l"), settings)
    events, r = run(cascade)
    assert kinds(events) == ["SLMStarted", "SLMDelta*", "SLMDone", "Decision0", "LLMStarted",
                             "LLMDelta*", "LLMDone", "Final"]
    assert [(t.role, t.model, t.answered) for t in r.tiers] == [("slm", "s", False),
                                                               ("llm", "l", True)]
    assert r.tiers[0].decision is r.decision and r.answered_tier == 1
    assert r.decision.message == "Deferred to the large model — confidence 0.30 < threshold 0.70"
    # a result built by hand still has a two-tier view
    assert [t.role for t in type(r)(question="q", threshold=0.5, slm=r.slm, llm=r.llm)
            .tier_steps()] == ["slm", "llm"]


# ------------------------------------------------------------------------------- the context


def test_context_reaches_every_tiers_chat_messages():
    cascade, (b0, b1, b2) = three(c0=0.3, c1=0.3)
    ctx = [Message("system", "Be brief."), Message("user", "I have 3 apples."),
           Message("assistant", "OK.")]
    _, r = run(cascade, q="How many if I eat one?", context=ctx)
    for b, system in ((b0, SLM_SYSTEM), (b1, SLM_SYSTEM), (b2, LLM_SYSTEM)):
        msgs = [m for kind, m, _ in b.calls if kind == "chat"][0]
        assert [m.role for m in msgs] == ["system", "user", "assistant", "user"]
        assert msgs[0].content == system + "\n\nBe brief."
        assert [m.content for m in msgs[1:]] == ["I have 3 apples.", "OK.",
                                                "How many if I eat one?"]
    assert r.question == "How many if I eat one?" and r.context == ctx
    # without context the messages are exactly today's
    cascade, (b0, _, _) = three()
    run(cascade)
    assert [m.role for m in b0.calls[0][1]] == ["system", "user"]
    # earlier turns count toward the question length limit; bad roles are refused
    cascade, _ = three(max_question_chars=50)
    with pytest.raises(InvalidQuestion, match="earlier turns"):
        cascade.run("q" * 20, context=[Message("user", "x" * 40)])
    with pytest.raises(InvalidQuestion, match="system, user or assistant"):
        cascade.run("q", context=[Message("tool", "x")])


# ------------------------------------------------------------------------------ log and API


def test_a_three_tier_result_is_logged_with_each_tier(tmp_path):
    cascade, _ = three(c0=0.3, c1=0.3, mid_error=None)
    _, r = run(cascade, context=[Message("user", "Earlier.")])
    store = Store(f"sqlite:///{tmp_path / 'log.sqlite'}")
    iid = store.log_interaction(r, "s1")
    row = store.get_interaction(iid)
    assert (row["slm_model"], row["llm_model"], row["final_model"]) == ("t0", "t2", "t2")
    assert row["decision_defer"] and row["decision_reason"] == "low_confidence"
    assert row["cost_usd"] == pytest.approx(r.cost_usd)
    tiers = row["tiers"]  # one interaction_tiers row per tier that ran
    assert [(t["index"], t["role"], t["model"], t["answered"]) for t in tiers] == \
        [(0, "slm", "t0", False), (1, "mid", "t1", False), (2, "llm", "t2", True)]
    assert tiers[1]["decision"] == "deferred" and tiers[1]["threshold"] == 0.6
    assert tiers[1]["output"] == r.tiers[1].output.text and tiers[1]["cost_usd"] > 0
    assert row["extra"]["context"] == [{"role": "user", "content": "Earlier."}]
    # a skipped middle tier's error is in the row's errors
    cascade, _ = three(c0=0.3, mid_error=BackendError("timeout", "slow"))
    _, r = run(cascade)
    row = store.get_interaction(store.log_interaction(r, "s1"))
    assert any(e.startswith("tier 1 error: timeout") for e in row["errors"])
    # a two-tier row has no tier records (the columns hold everything, as before)
    settings = Settings(db_url="sqlite://", use_probe=False, confidence_source="verbal")
    two = Cascade(FakeBackend([reply(4, 0.3)], model_name="s"),
                  FakeBackend(["\\boxed{5}"], model_name="l"), settings)
    _, r = run(two)
    row = store.get_interaction(store.log_interaction(r, "s1"))
    assert "tiers" not in row["extra"] and "context" not in row["extra"]
    store.close()


def three_tier_service(tmp_path, c0=0.3, c1=0.8):
    settings = Settings(tiers=[dict(t, display_name=f"scripted-{t['model']}") for t in TIERS],
                        prices={f"scripted-{k}": v for k, v in PRICES.items()},
                        db_url=f"sqlite:///{tmp_path / 'log.sqlite'}",
                        use_probe=False, confidence_source="verbal")
    b0 = FakeBackend([reply(4, c0)], model_name="scripted-t0")
    b1 = FakeBackend([reply(5, c1)], model_name="scripted-t1")
    b2 = FakeBackend(["The answer is \\boxed{6}"], model_name="scripted-t2")
    return CoreaService(settings, slm=b0, llm=b2, middle=[b1])


def test_api_reports_each_tier_and_takes_a_threshold_list(tmp_path):
    svc = three_tier_service(tmp_path)
    c = TestClient(create_api(svc, ApiSettings(keys="sk-k")))
    auth = {"Authorization": "Bearer sk-k"}
    models = c.get("/v1/models", headers=auth).json()["data"]
    assert [m["id"] for m in models] == ["corea", "scripted-t0", "scripted-t1", "scripted-t2"]
    assert models[0]["corea"]["tiers"] == ["scripted-t0", "scripted-t1", "scripted-t2"]
    assert models[0]["corea"]["thresholds"] == [0.7, 0.6]
    assert [m["corea"]["role"] for m in models[1:]] == ["slm", "mid", "llm"]
    q = [{"role": "user", "content": "What is 2+2?"}]
    b = c.post("/v1/chat/completions", headers=auth, json={"model": "corea", "messages": q})
    assert b.status_code == 200, b.text
    b = b.json()
    co = b["corea"]
    assert (co["answered_tier"], co["answered_by"], co["final_answer"]) == (1, "scripted-t1", "5")
    assert (co["decision"], co["reason"]) == ("deferred", "low_confidence")  # the first tier's
    assert [(t["index"], t["role"], t["decision"], t["answered"]) for t in co["tiers"]] == \
        [(0, "slm", "deferred", False), (1, "mid", "kept", True)]
    assert all(t["completion_tokens"] > 0 and t["cost_usd"] > 0 for t in co["tiers"])
    assert co["cost_usd"] == pytest.approx(sum(t["cost_usd"] for t in co["tiers"]))
    assert b["usage"]["completion_tokens"] == sum(t["completion_tokens"] for t in co["tiers"])
    assert "\\boxed{5}" in b["choices"][0]["message"]["content"]
    logged = svc.store.get_interaction(co["interaction_id"])["tiers"]
    assert [t["answered"] for t in logged] == [False, True]
    # a τ list, one per tier but the last; the wrong length is a 400
    co = c.post("/v1/chat/completions", headers=auth, json={
        "model": "corea", "messages": q, "corea": {"threshold": [0.2, 0.9]}}).json()["corea"]
    assert co["answered_tier"] == 0 and co["threshold"] == 0.2
    co = c.post("/v1/chat/completions", headers=auth, json={
        "model": "corea", "messages": q, "corea": {"threshold": [0.9, 0.9]}}).json()["corea"]
    assert co["answered_tier"] == 2 and [t["threshold"] for t in co["tiers"]] == [0.9, 0.9, None]
    r = c.post("/v1/chat/completions", headers=auth, json={
        "model": "corea", "messages": q, "corea": {"threshold": [0.5]}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_threshold"
    # per-tier generation settings reach the middle tier too
    co = c.post("/v1/chat/completions", headers=auth, json={
        "model": "corea:0.9", "messages": q,
        "corea": {"tiers": [None, {"max_tokens": 2}, None]}}).json()["corea"]
    assert co["tiers"][1]["finish_reason"] == "length" and co["answered_tier"] == 2


def test_history_and_the_cli_show_every_tier_from_the_one_record(tmp_path, monkeypatch,
                                                                 capsys):
    """A question that goes through all three tiers: ``corea ask`` streams a heading per tier
    and prints each tier's summary (the result's ``tiers``, :class:`TierStep`), and the History
    tab lists every tier from the logged per-tier rows."""
    import corea.cli.ask as ask_cli
    import corea.service
    from corea.ui.history import HistoryHandlers

    svc = three_tier_service(tmp_path, c0=0.3, c1=0.3)  # both deciding tiers defer
    monkeypatch.setattr(corea.service, "CoreaService", lambda settings: svc)
    assert ask_cli.run(ask_cli.build_parser().parse_args(["What is 2+2?"])) == 0
    out, err = capsys.readouterr()
    headings = [line for line in err.splitlines() if line.startswith("── ")]
    assert headings[0].startswith("── SLM (scripted-t0") and "── tier 2 (scripted-t1) ──" in \
        headings and any(h.startswith("── LLM (scripted-t2") for h in headings)
    result = json.loads(out)
    assert [(t["index"], t["model"], t["answer"], t["decision"], t["answered"])
            for t in result["tiers"]] == [(0, "scripted-t0", "4", "deferred", False),
                                          (1, "scripted-t1", "5", "deferred", False),
                                          (2, "scripted-t2", "6", None, True)]
    assert (result["slm"]["answer"], result["llm"]["answer"]) == ("4", "6")  # read from it
    rows, status = HistoryHandlers(svc).history_table("All", "All", "")
    assert status.startswith("1 interaction")
    assert rows[0][-1] == ("scripted-t0: 4 (deferred) → scripted-t1: 5 (deferred) → "
                           "scripted-t2: 6 ✓")
    logged = svc.store.get_interaction(result["interaction_id"])["tiers"]
    assert [t["model"] for t in logged] == [t["model"] for t in result["tiers"]]


def test_api_stream_sends_the_middle_tiers_text_when_it_keeps(tmp_path):
    svc = three_tier_service(tmp_path)
    c = TestClient(create_api(svc, ApiSettings(keys="sk-k")))
    r = c.post("/v1/chat/completions", headers={"Authorization": "Bearer sk-k"}, json={
        "model": "corea", "messages": [{"role": "user", "content": "What is 2+2?"}],
        "stream": True})
    blocks = [b for b in r.text.split("\n\n") if b.strip()]
    assert blocks[-1] == "data: [DONE]"
    data = [json.loads(b[6:]) for b in blocks[:-1] if b.startswith("data: ")]
    comments = [b for b in blocks if b.startswith(": corea")]
    content = "".join(d["choices"][0]["delta"].get("content") or "" for d in data if d["choices"])
    assert "\\boxed{5}" in content and "\\boxed{4}" not in content
    assert [json.loads(x.split(" ", 3)[3])["tier"] for x in comments if "corea tier" in x] \
        == [0, 1]
    decisions = [json.loads(x.split(" ", 3)[3]) for x in comments if "corea decision" in x]
    assert [(d["tier"], d["decision"]) for d in decisions] == [(0, "deferred"), (1, "kept")]
    assert data[-1]["corea"]["answered_tier"] == 1


# ------------------------------------------------------------------------------ the Ask tab


def test_ask_tab_shows_a_block_per_tier_that_ran(tmp_path):
    from corea.ui.ask import TurnView

    svc = three_tier_service(tmp_path, c0=0.3, c1=0.3)
    history: list = []
    view = TurnView(history, 0.7)
    for ev in svc.ask("What is 2+2?"):
        view.apply(ev)
    titles = [m["metadata"].get("title") for m in history if m["metadata"].get("title")]
    assert [t for t in titles if t.startswith("🧠")] == ["🧠 Small model reasoning — scripted-t0",
                                                         "🧠 Tier 2 reasoning — scripted-t1"]
    assert titles.count("🔎 Behind this confidence") == 2  # one per deciding tier
    text = "\n".join(m["content"] for m in history)
    assert "**Tier 2's answer:** 5" in text and "**Tier 3, the last (scripted-t2):**" in text
    assert "Deferred to tier 3 (scripted-t2)" in text
    card = history[-1]["content"]
    assert card.startswith("↪️ **Answered by the last tier** (scripted-t2)")
    assert "| tier 1 · scripted-t0 | 4 |" in card and "| tier 3 · scripted-t2 | 6 |" in card
    assert view.result.answered_tier == 2


# ------------------------------------------------------------------------------- evaluation


def item(i, *tiers):
    return TierItem(str(i), tuple(TierScore(*t) for t in tiers))


ITEMS = [
    # (correct, cost, confidence, usable) per tier
    item(0, (True, 1.0, 0.9), (True, 3.0, 0.9), (True, 10.0)),
    item(1, (False, 1.0, 0.5), (True, 3.0, 0.8), (True, 10.0)),
    item(2, (False, 1.0, 0.5), (False, 3.0, 0.4), (True, 10.0)),
    item(3, (False, 1.0, 0.95, False), (False, 3.0, None), (False, 10.0)),  # cut off at tier 1
]


def test_tau_vector_evaluation_and_sweep():
    assert [route(it, (0.7, 0.6)) for it in ITEMS] == [0, 1, 2, 2]
    o = evaluate_taus(ITEMS, (0.7, 0.6))
    assert o.pass_at_1 == 0.75 and o.n_items == 4
    assert o.cost_usd == pytest.approx(1 + (1 + 3) + (1 + 3 + 10) * 2)
    assert o.answered == (0.25, 0.25, 0.5) and o.reached == (1.0, 0.75, 0.5)
    assert o.deferral_rate == (0.75, pytest.approx(2 / 3))
    # τ = 0 keeps every usable answer at the first tier; τ = 1 sends all to the last
    assert evaluate_taus(ITEMS, (0.0, 0.0)).answered == (0.75, 0.0, 0.25)
    assert evaluate_taus(ITEMS, (1.0, 1.0)).answered == (0.0, 0.0, 1.0)
    grid = tau_grid([0.0, 0.7, 1.0], 3)
    assert len(grid) == 9 and grid[0] == (0.0, 0.0)
    assert tau_grid([[0.5], [0.1, 0.2]], 3) == [(0.5, 0.1), (0.5, 0.2)]
    outs = sweep(ITEMS, grid)
    assert [x.taus for x in outs] == grid
    front = pareto(outs)
    assert all(a.cost_usd < b.cost_usd and a.pass_at_1 < b.pass_at_1
               for a, b in zip(front, front[1:]))
    assert single_tier(ITEMS, 2) == {"tier": 2, "pass_at_1": 0.75, "cost_usd": 40.0,
                                     "cost_per_item": 10.0}
    with pytest.raises(ValueError, match="one per tier but the last"):
        route(ITEMS[0], (0.5,))


def test_the_harness_scores_each_tier_once_into_one_record():
    from corea.datasets import Item
    from corea.eval.harness import score_item
    from corea.eval.tiers import tier_item

    cascade, (b0, b1, b2) = three(c0=0.3, c1=0.8)
    row = score_item(Item("a", "What is 2+5-1?", "6", None, "t"), cascade)
    assert [len(b.calls) for b in (b0, b1, b2)] == [1, 1, 1]
    scored = tier_item(row)
    assert [s.correct for s in scored.tiers] == [False, False, True]
    assert [s.confidence for s in scored.tiers] == [0.3, 0.8, None]
    assert [t["model"] for t in row["tiers"]] == ["t0", "t1", "t2"]
    assert route(scored, (0.7, 0.6)) == 1


def test_confidence_first_and_cancel_over_three_tiers():
    import threading

    from corea.backends.fake import FakeBackend as FB

    settings = Settings(tiers=TIERS, db_url="sqlite://", use_probe=False,
                        confidence_source="verbal", deferral_order="confidence_first")
    b0 = FB([reply(4, 0.9)], continuations=[" 0.2"], model_name="t0")
    cascade = Cascade(b0, FB(["\\boxed{6}"], model_name="t2"), settings,
                      middle=[FB([reply(5, 0.9)], model_name="t1")])
    events, r = run(cascade)  # deferred before solving: the middle tier answers
    assert kinds(events)[:4] == ["SLMStarted", "SLMDelta*", "SLMDone", "Decision0"]
    assert r.decision.reason == "low_confidence" and r.answered_tier == 1
    assert r.tiers[0].output is r.slm and r.final_answer == "5"
    # stopped while the middle tier streams: logged once as cancelled
    cancel = threading.Event()
    cascade, _ = three(c0=0.3)
    results = []
    for ev in cascade.run("q", cancel=cancel, on_result=results.append):
        if isinstance(ev, TierDelta) and ev.tier == 1:
            cancel.set()
    assert len(results) == 1 and results[0].status == "cancelled"
    assert [t.index for t in results[0].tiers] == [0, 1]
