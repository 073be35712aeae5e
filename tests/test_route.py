"""Pre-generation routing on scripted backends: a tier that sends a question straight on before
it writes, what it records, and a tier that cannot read its state solving as usual."""

from __future__ import annotations

import numpy as np
import pytest

from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.cascade.route import ROUTED, Router
from corea.config import Price, RouteSettings, Settings
from corea.events import Decision, Final, TierDone
from corea.signals.probe import LinearProbe, ProbeCard

PRICES = {"slm": Price(input_per_mtok=1.0, output_per_mtok=2.0),
          "llm": Price(input_per_mtok=10.0, output_per_mtok=20.0)}
HARD, EASY = np.array([-3.0, 0.0]), np.array([3.0, 0.0])


def prompt_probe(position: str = "prompt") -> LinearProbe:
    """P(correct) = sigmoid(x[0]): the scripted state [-3, 0] reads 4.7%, [3, 0] 95.3%."""
    card = ProbeCard(slm="slm", position=position, target="slm_correct", dim=2, c=1.0,
                     n_train=10, n_positive=5)
    return LinearProbe(np.zeros(2), np.ones(2), np.array([1.0, 0.0]), 0.0, card)


def make(state=HARD, tau=0.4, prompt_states=True):
    settings = Settings(threshold=0.7, prices=PRICES, db_url="sqlite://")
    slm = FakeBackend(["Two plus two. \\boxed{4}\nConfidence: 0.9"], model_name="slm",
                      prompt_states=(lambda msgs: state) if prompt_states else None)
    llm = FakeBackend(["It is \\boxed{5}"], model_name="llm")
    return Cascade(slm, llm, settings, router=Router(prompt_probe(), tau)), slm, llm


def run(cascade, q="What is 2+2?"):
    events = list(cascade.run(q))
    assert isinstance(events[-1], Final)
    return events, events[-1].result


def test_a_question_the_probe_expects_to_fail_goes_straight_to_the_llm():
    cascade, slm, llm = make(HARD)
    events, r = run(cascade)
    assert [c[0] for c in slm.calls] == ["prompt_state"]  # the SLM never wrote a token
    assert len(llm.calls) == 1 and r.final_answer == "5" and r.answered_tier == 1
    d = r.tiers[0].decision
    assert d.defer and d.reason == ROUTED and d.signal == "prior_probe"
    assert d.confidence == pytest.approx(1 / (1 + np.exp(3)))
    assert d.threshold == 0.4
    assert d.message.startswith("Sent straight to the large model")
    assert "5%" in d.message and "40%" in d.message
    out = r.tiers[0].output
    assert out.finish_reason == ROUTED and out.text == "" and out.answer is None
    # the prefill only: the prompt's words are its tokens, priced at the SLM's input price
    n_prompt = sum(len(m.content.split()) for m in slm.calls[0][1])
    assert out.prompt_tokens == n_prompt and out.completion_tokens == 0
    assert out.cost_usd == pytest.approx(n_prompt * 1.0 / 1e6)
    # the event stream: the routed tier's done event and its decision
    done = [e for e in events if isinstance(e, TierDone) and e.tier == 0]
    dec = [e for e in events if isinstance(e, Decision)]
    assert done[0].output.finish_reason == ROUTED and dec[0].info.reason == ROUTED
    t = r.tiers[0].to_dict()
    assert t["reason"] == ROUTED and t["signal_value"] == pytest.approx(d.confidence)


def test_a_threshold_of_zero_keeps_the_small_models_answer_without_routing():
    cascade, slm, llm = make(HARD)
    _, r = run_at(cascade, 0.0)
    assert "prompt_state" not in [c[0] for c in slm.calls] and not llm.calls
    assert r.final_answer == "4" and r.answered_tier == 0 and not r.tiers[0].decision.defer


def run_at(cascade, tau, q="What is 2+2?"):
    events = list(cascade.run(q, threshold=tau))
    assert isinstance(events[-1], Final)
    return events, events[-1].result


def test_a_question_the_probe_expects_to_pass_is_solved_and_pays_the_prefill_too():
    cascade, slm, llm = make(EASY)
    _, r = run(cascade)
    assert [c[0] for c in slm.calls] == ["prompt_state", "chat"]
    assert r.final_answer == "4" and not llm.calls
    d = r.tiers[0].decision
    assert d.reason == "confident" and d.signal_note is None
    n_prompt = sum(len(m.content.split()) for m in slm.calls[0][1])
    solved = sum(len(m.content.split()) for m in slm.calls[1][1])
    assert r.tiers[0].output.prompt_tokens == n_prompt + solved


def test_an_engine_without_states_never_routes_and_notes_nothing():
    cascade, slm, llm = make(prompt_states=False)
    _, r = run(cascade)
    assert [c[0] for c in slm.calls] == ["chat"] and r.final_answer == "4"
    assert r.tiers[0].decision.signal_note is None


def test_a_failing_read_solves_and_says_why_it_was_not_routed():
    def broken(msgs):
        raise RuntimeError("no state")

    cascade, slm, llm = make()
    slm.prompt_states = broken
    _, r = run(cascade)
    assert r.final_answer == "4"
    assert "not routed: reading its state after the question failed (internal)" in \
        r.tiers[0].decision.signal_note


def test_a_router_needs_a_prompt_position_probe_and_a_threshold_in_range():
    with pytest.raises(ValueError, match="prompt position"):
        Router(prompt_probe("end"), 0.4)
    with pytest.raises(ValueError):
        Router(prompt_probe(), 1.5)


def test_the_turn_view_says_sent_straight_to_the_large_model_and_why():
    from corea.ui.turn_view import TurnView

    cascade, *_ = make(HARD)
    history: list = []
    view = TurnView(history, 0.7, public=True)
    for ev in cascade.run("What is 2+2?"):
        view.apply(ev)
    text = "\n".join(m["content"] for m in history)
    assert "Sent straight to the large model" in text and "routing threshold" in text
    assert "no answer found" not in text  # a routed tier shows no empty answer
    assert "⏩ **Sent straight to the large model** — before the small model wrote" in text
    assert "vs routing threshold **0.40**" in text


def test_the_api_objects_name_the_routed_tier_and_its_prefill_seconds():
    from corea.api.translate import corea_object, usage_of

    cascade, *_ = make(HARD)
    _, r = run(cascade)
    co = corea_object(r)
    assert (co["decision"], co["reason"], co["signal"]) == ("deferred", ROUTED, "prior_probe")
    assert co["message"].startswith("Sent straight to the large model")
    assert co["tiers"][0]["finish_reason"] == ROUTED and co["tiers"][0]["answer"] is None
    assert co["answered_tier"] == 1
    first = usage_of(r)["seconds"]["tiers"][0]
    assert first["generation"] == 0.0  # it wrote nothing: its seconds are all prefill
    assert first["prompt"] == pytest.approx(r.tiers[0].output.latency_s, abs=1e-6)


def test_the_service_routes_with_the_probe_its_settings_name_and_logs_why(tmp_path):
    from corea.service import CoreaService

    prompt_probe().save(tmp_path / "probe")
    settings = Settings(threshold=0.7, prices=PRICES, db_url="sqlite://",
                        slm={"display_name": "slm",
                             "route": {"probe": str(tmp_path / "probe"), "threshold": 0.4}})
    slm = FakeBackend(["\\boxed{4}\nConfidence: 0.9"], model_name="slm",
                      prompt_states=lambda msgs: HARD)
    svc = CoreaService(settings, slm=slm, llm=FakeBackend(["\\boxed{5}"], model_name="llm"))
    assert svc.router is not None and svc.router.threshold == 0.4
    r = list(svc.ask("What is 2+2?"))[-1].result
    assert r.final_answer == "5" and r.tiers[0].decision.reason == ROUTED
    row = svc.store.get_interaction(r.interaction_id)
    assert row["decision_reason"] == ROUTED
    t0 = row["tiers"][0]
    assert t0["reason"] == ROUTED and t0["signal_value"] == pytest.approx(r.decision.confidence)
    assert t0["message"].startswith("Sent straight to the large model")


def test_route_settings_are_on_for_the_slm_off_for_other_tiers_and_validated(monkeypatch):
    from corea.config import ROUTE_THRESHOLD, TierSettings

    assert Settings().slm.route.threshold == ROUTE_THRESHOLD and Settings().slm.route.probe is None
    assert TierSettings(model="m").route is None and Settings().llm.route is None
    assert Settings(slm={"route": None}).slm.route is None
    monkeypatch.setenv("COREA_SLM__ROUTE", "null")
    assert Settings().slm.route is None
    with pytest.raises(ValueError):
        Settings(slm={"route": {"threshold": 2.0}})


def test_the_default_slm_routes_with_the_shipped_prompt_probe():
    from corea.cascade.route import load_router, shipped_route_probe_dir
    from corea.service import CoreaService

    assert shipped_route_probe_dir("Qwen2.5-Coder-0.5B-Instruct") is not None
    shipped = dict(db_url="sqlite://", use_shipped_signals=True, use_shipped_adapter=True)
    svc = CoreaService(Settings(**shipped), slm=FakeBackend(), llm=FakeBackend())
    router = svc.router  # the adapted default SLM reads its base model's prompt states
    assert router is not None and router.probe.card.position == "prompt"
    assert router.threshold == Settings().slm.route.threshold
    assert router.probe.coef.shape == (896,)
    off = CoreaService(Settings(**shipped, slm={"route": None}), slm=FakeBackend(),
                       llm=FakeBackend())
    assert off.router is None
    named = RouteSettings(probe=shipped_route_probe_dir("Qwen2.5-Coder-0.5B-Instruct"))
    with pytest.raises(ValueError, match="fit for Qwen2.5-Coder-0.5B-Instruct, not another"):
        load_router(named, "another-model")
    assert load_router(RouteSettings(), "another-model") is None  # nothing ships for it


def test_a_middle_tier_given_a_router_sends_the_question_to_the_last_tier():
    from corea.cascade.plan import TierOptions

    settings = Settings(threshold=0.7, prices=PRICES, db_url="sqlite://")
    slm = FakeBackend(["\\boxed{4}\nConfidence: 0.1"], model_name="slm")
    mid = FakeBackend(["\\boxed{6}\nConfidence: 0.9"], model_name="mid",
                      prompt_states=lambda msgs: HARD)
    llm = FakeBackend(["\\boxed{5}"], model_name="llm")
    cascade = Cascade(slm, llm, settings, middle=[mid],
                      options=[None, TierOptions(route=Router(prompt_probe(), 0.4)), None])
    _, r = run(cascade)
    assert [c[0] for c in mid.calls] == ["prompt_state"] and r.final_answer == "5"
    d = r.tiers[1].decision
    assert d.reason == ROUTED and d.message.startswith("Sent straight to tier 3 (llm)")
    assert "before tier 2 (mid) wrote anything" in d.message


def test_the_api_streams_the_llm_answer_of_a_routed_question_and_says_why(tmp_path):
    import json

    from fastapi.testclient import TestClient

    from corea.api import ApiSettings, create_api
    from corea.service import CoreaService

    prompt_probe().save(tmp_path / "probe")
    settings = Settings(threshold=0.7, prices=PRICES, db_url=f"sqlite:///{tmp_path / 'l.db'}",
                        slm={"display_name": "slm",
                             "route": {"probe": str(tmp_path / "probe"), "threshold": 0.4}})
    slm = FakeBackend(["\\boxed{4}\nConfidence: 0.9"], model_name="slm",
                      prompt_states=lambda msgs: HARD)
    svc = CoreaService(settings, slm=slm, llm=FakeBackend(["It is \\boxed{5}"], model_name="llm"))
    app = create_api(svc, ApiSettings(keys="sk-route-0123456789"))
    r = TestClient(app).post(
        "/v1/chat/completions", headers={"Authorization": "Bearer sk-route-0123456789"},
        json={"model": "corea", "messages": [{"role": "user", "content": "What is 2+2?"}],
              "stream": True, "stream_options": {"include_usage": True}})
    data = [json.loads(line[6:]) for line in r.text.splitlines()
            if line.startswith("data: {")]
    content = "".join(d["choices"][0]["delta"].get("content") or ""
                      for d in data if d["choices"])
    assert content == "It is \\boxed{5}"
    co = data[-1]["corea"]
    assert co["reason"] == ROUTED and co["message"].startswith("Sent straight to the large model")
    assert co["tiers"][0]["finish_reason"] == ROUTED and co["answered_tier"] == 1
    seconds = data[-1]["usage"]["seconds"]
    assert seconds["tiers"][0]["generation"] == 0.0 and len(seconds["tiers"]) == 2
