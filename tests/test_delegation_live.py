"""Delegation routing in the running cascade, on scripted backends: both models prefill the
question before the small one writes, the delegation value decides, every prefill is charged,
and nothing that fails stops an answer. Also the saved model's folder and its settings."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.cascade.delegate import DELEGATION, Delegator, load_delegator
from corea.cascade.route import ROUTED
from corea.config import Price, RouteSettings, Settings, load_settings
from corea.events import Final
from corea.prompts import llm_messages, slm_messages
from corea.signals.delegation import Delegation, Head, value_before
from corea.signals.delegation_files import (DelegationCard, load_delegation, save_delegation,
                                            shipped_delegation_dir)
from corea.signals.probe import LinearProbe, ProbeCard

PRICES = {"slm": Price(input_per_mtok=1.0, output_per_mtok=2.0),
          "llm": Price(input_per_mtok=10.0, output_per_mtok=20.0)}
HARD, EASY = np.array([-3.0, 0.0]), np.array([3.0, 0.0])
Q = "What is 2+2?"


def probe(tier: str, target: str, position: str = "prompt") -> LinearProbe:
    """P(target) = sigmoid(x[0]): the state [-3, 0] reads 4.7%, [3, 0] 95.3%."""
    card = ProbeCard(slm="slm", position=position, target=target, dim=2, c=0.01, n_train=10,
                     n_positive=5, tier=tier)
    return LinearProbe(np.zeros(2), np.ones(2), np.array([1.0, 0.0]), 0.0, card)


def model() -> Delegation:
    """P(delegation) = sigmoid(logit P(LLM right) - logit P(SLM right))."""
    head = Head(np.zeros(3), np.ones(3), np.array([-1.0, 1.0, 0.0]), 0.0)
    return Delegation(probe("slm", "slm_correct"), probe("llm", "llm_correct"), None, head, None)


def card(threshold: float = 0.4, llm: str = "llm") -> DelegationCard:
    h = model().before
    return DelegationCard(slm="slm", llm=llm, data=["runs/x (gsm8k/train, 10 rows)"],
                          n_train=10, n_helps=5, c_slm=0.01, c_llm=0.01, head_c=1.0,
                          before={"mean": list(h.mean), "scale": list(h.scale),
                                  "coef": list(h.coef), "intercept": h.intercept},
                          route_threshold=threshold)


def make(slm_state=HARD, llm_state=EASY, tau=0.4, reply="Two. \\boxed{4}\nConfidence: 0.9",
         llm_name="llm"):
    settings = Settings(threshold=0.7, prices=PRICES, db_url="sqlite://")
    slm = FakeBackend([reply], model_name="slm",
                      prompt_states=None if slm_state is None else (lambda m: slm_state))
    llm = FakeBackend(["It is \\boxed{5}"], model_name=llm_name,
                      prompt_states=None if llm_state is None else (lambda m: llm_state))
    return Cascade(slm, llm, settings, router=Delegator(model(), "llm", tau)), slm, llm


def run(cascade, tau=None):
    events = list(cascade.run(Q, threshold=tau))
    assert isinstance(events[-1], Final)
    return events[-1].result


def words(messages) -> int:
    return sum(len(m.content.split()) for m in messages)


def test_both_models_read_the_question_and_a_likely_fix_goes_straight_to_the_llm():
    cascade, slm, llm = make(HARD, EASY)
    r = run(cascade)
    assert [c[0] for c in slm.calls] == ["prompt_state"]  # the SLM wrote nothing
    assert [c[0] for c in llm.calls] == ["prompt_state", "chat"]
    # the LLM prefilled exactly the prompt it then answered from (its cache can reuse it)
    assert llm.calls[0][1] == llm.calls[1][1] == llm_messages(Q)
    assert slm.calls[0][1] == slm_messages(Q)
    d = r.tiers[0].decision
    assert d.defer and d.reason == ROUTED and d.signal == DELEGATION and d.threshold == 0.4
    assert d.confidence == pytest.approx(1 / (1 + np.exp(6)))  # 1 - sigmoid(3 + 3)
    assert d.message.startswith("Sent straight to the large model — before the small model "
                                "wrote anything, both models read the question")
    assert "wrote anything, both models read the question: the chance that the large model " \
        "gets it right and the small model gets it wrong is 100%, high enough to ask the " \
        "large model directly (1 − 100% = 0%, below the routing threshold 40%)" in d.message
    assert r.final_answer == "5" and r.answered_tier == 1
    # charges: the SLM its prefill at its prices, the LLM its prefill and its answer at its own
    first, last = r.tiers[0].output, r.tiers[1].output
    n_slm, n_llm = words(slm_messages(Q)), words(llm_messages(Q))
    assert first.finish_reason == ROUTED and first.prompt_tokens == n_slm
    assert first.cost_usd == pytest.approx(n_slm * 1.0 / 1e6)
    assert last.prompt_tokens == 2 * n_llm and last.completion_tokens == 3
    assert last.cost_usd == pytest.approx((2 * n_llm * 10.0 + 3 * 20.0) / 1e6)
    assert r.cost_usd == pytest.approx(first.cost_usd + last.cost_usd)


def test_an_unlikely_fix_lets_the_small_model_answer_and_it_pays_both_prefills_when_kept():
    cascade, slm, llm = make(EASY, HARD)
    r = run(cascade)
    assert [c[0] for c in slm.calls] == ["prompt_state", "chat"]
    assert [c[0] for c in llm.calls] == ["prompt_state"]  # read, never asked to answer
    d = r.tiers[0].decision
    assert not d.defer and d.reason == "confident" and d.signal_note is None
    assert r.final_answer == "4" and len(r.tiers) == 1
    out, n = r.tiers[0].output, words(slm_messages(Q))
    n_llm = words(llm_messages(Q))
    assert out.prompt_tokens == 2 * n + n_llm  # its prefill, its answer, the LLM's prefill
    assert out.cost_usd == pytest.approx((2 * n * 1.0 + out.completion_tokens * 2.0
                                          + n_llm * 10.0) / 1e6)


def test_a_deferral_after_solving_charges_the_llm_prefill_to_the_llm():
    cascade, slm, llm = make(EASY, HARD, reply="Two. \\boxed{4}\nConfidence: 0.1")
    r = run(cascade)
    assert r.tiers[0].decision.reason == "low_confidence" and r.final_answer == "5"
    n, n_llm = words(slm_messages(Q)), words(llm_messages(Q))
    assert r.tiers[0].output.prompt_tokens == 2 * n
    assert r.tiers[1].output.prompt_tokens == 2 * n_llm


def test_a_threshold_of_zero_reads_nothing_and_keeps_the_small_models_answer():
    cascade, slm, llm = make(HARD, EASY)
    r = run(cascade, tau=0.0)
    assert [c[0] for c in slm.calls] == ["chat"] and not llm.calls and r.final_answer == "4"


@pytest.mark.parametrize("slm_state, llm_state, note", [
    (None, EASY, "not routed: its engine reads no hidden states"),
    (HARD, None, "not routed: the large model's engine reads no hidden states"),
    (np.zeros(5), EASY, "not routed: the delegation model could not read the states "
                        "(ValueError)"),
])
def test_a_check_that_cannot_run_solves_and_says_why(slm_state, llm_state, note):
    cascade, slm, llm = make(slm_state, llm_state)
    r = run(cascade)
    assert r.final_answer == "4" and "chat" in [c[0] for c in slm.calls]
    assert note in r.tiers[0].decision.signal_note
    if slm_state is not None:  # its prefill was made: it is paid for
        n = words(slm_messages(Q))
        assert r.tiers[0].output.prompt_tokens >= 2 * n


def test_a_failing_llm_read_and_another_next_model_never_stop_an_answer():
    def broken(messages):
        raise RuntimeError("no state")

    cascade, slm, llm = make(HARD, EASY)
    llm.prompt_states = broken
    r = run(cascade)
    assert r.final_answer == "4"
    assert "reading the large model's state after the question failed (internal)" in \
        r.tiers[0].decision.signal_note
    cascade, slm, llm = make(HARD, EASY, llm_name="other")
    r = run(cascade)
    assert [c[0] for c in llm.calls] == [] and r.final_answer == "4"
    assert "fit for llm, and the next tier runs other" in r.tiers[0].decision.signal_note


def test_the_turn_card_and_the_badge_say_why_in_plain_words():
    from corea.ui.cards import turn_card
    from corea.ui.turn_view import TurnView

    cascade, *_ = make(HARD, EASY)
    r = run(cascade)
    text = turn_card(r)
    assert text.startswith("⏩ **Sent straight to the large model** — before the small model "
                           "wrote anything, both models read the question: the chance that the "
                           "large model gets it right and the small one wrong was high")
    assert "vs routing threshold **0.40**" in text
    history: list = []
    view = TurnView(history, 0.7, public=True)
    for ev in make(HARD, EASY)[0].run(Q):
        view.apply(ev)
    assert "the chance of keeping the small model" in "\n".join(m["content"] for m in history)


def test_the_model_folder_round_trips_and_refuses_what_it_is_not(tmp_path):
    save_delegation(model(), card(0.55), tmp_path / "d")
    saved = load_delegation(tmp_path / "d")
    assert saved.card.route_threshold == 0.55 and saved.card.llm == "llm"
    assert saved.model.after is None and saved.model.calibrator is None
    for s, l in ((HARD, EASY), (EASY, HARD), (EASY, EASY)):
        assert value_before(saved.model, s, l) == pytest.approx(value_before(model(), s, l))
    bad = Delegation(probe("slm", "slm_correct", "end"), probe("llm", "llm_correct"), None,
                     model().before, None)
    save_delegation(bad, card(), tmp_path / "bad")
    with pytest.raises(ValueError, match="prompt probes"):
        load_delegation(tmp_path / "bad")
    with pytest.raises(FileNotFoundError):
        load_delegation(tmp_path / "none")
    (tmp_path / "d" / "card.json").write_text(json.dumps({"slm": "slm"}))
    with pytest.raises(ValueError, match="not a delegation card"):
        load_delegation(tmp_path / "d")


def test_route_settings_take_by_delegation_from_yaml_and_env_and_refuse_nonsense(
        tmp_path, monkeypatch):
    assert Settings().slm.route.by == "probe"  # today's router stays the default
    assert Settings().slm.route.threshold == pytest.approx(0.407)
    r = Settings(slm={"route": {"by": "delegation"}}).slm.route
    assert r.by == "delegation" and r.threshold is None  # the model card's τ_r
    y = tmp_path / "c.yaml"
    y.write_text("slm:\n  route:\n    by: delegation\n    threshold: 0.6\n")
    assert load_settings(y).slm.route.threshold == 0.6
    assert load_settings(y).slm.route.by == "delegation"
    monkeypatch.setenv("COREA_SLM__ROUTE__BY", "delegation")
    assert Settings().slm.route.by == "delegation" and Settings().slm.route.threshold is None
    monkeypatch.delenv("COREA_SLM__ROUTE__BY")
    with pytest.raises(ValueError, match="'probe' or 'delegation'"):
        Settings(slm={"route": {"by": "oracle"}})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Settings(slm={"route": {"by": "delegation", "threshold": 1.5}})
    with pytest.raises(ValueError, match="route threshold"):
        Delegator(model(), "llm", -0.1)


def service(tmp_path, route: dict, llm_backend: str = "llamacpp"):
    from corea.service import CoreaService

    settings = Settings(threshold=0.7, prices=PRICES, db_url=f"sqlite:///{tmp_path / 'l.db'}",
                        slm={"display_name": "slm", "route": route},
                        llm={"display_name": "llm", "backend": llm_backend})
    slm = FakeBackend(["\\boxed{4}\nConfidence: 0.9"], model_name="slm",
                      prompt_states=lambda m: HARD)
    llm = FakeBackend(["\\boxed{5}"], model_name="llm", prompt_states=lambda m: EASY)
    return CoreaService(settings, slm=slm, llm=llm)


def test_the_service_routes_by_delegation_with_the_cards_threshold_and_logs_why(tmp_path):
    save_delegation(model(), card(0.3), tmp_path / "d")
    svc = service(tmp_path, {"by": "delegation", "probe": str(tmp_path / "d")})
    assert isinstance(svc.router, Delegator) and svc.router.threshold == 0.3
    r = list(svc.ask(Q))[-1].result
    assert r.final_answer == "5" and r.tiers[0].decision.signal == DELEGATION
    row = svc.store.get_interaction(r.interaction_id)
    t0 = row["tiers"][0]
    assert row["decision_reason"] == ROUTED and t0["signal"] == DELEGATION
    assert "high enough to ask the large model directly" in t0["message"]
    svc = service(tmp_path, {"by": "delegation", "probe": str(tmp_path / "d"), "threshold": 0.0})
    assert svc.router.threshold == 0.0
    assert list(svc.ask(Q))[-1].result.final_answer == "4"


def test_the_service_warns_where_delegation_is_set_but_cannot_run(tmp_path, caplog):
    save_delegation(model(), card(llm="another-llm"), tmp_path / "other")
    save_delegation(model(), card(), tmp_path / "d")
    with caplog.at_level(logging.WARNING, logger="corea"):
        assert service(tmp_path, {"by": "delegation", "probe": str(tmp_path / "other")}
                       ).router is None
        assert "fit in front of another-llm, but the next tier runs llm" in caplog.text
        assert service(tmp_path, {"by": "delegation", "probe": str(tmp_path / "d")},
                       llm_backend="openai").router is None
        assert "next tier's engine (openai) reads no hidden states" in caplog.text
        svc = service(tmp_path, {"by": "delegation", "probe": str(tmp_path / "d")})
        svc.settings = svc.settings.model_copy(
            update={"slm": svc.settings.slm.model_copy(update={"backend": "transformers"})})
        assert svc.router is None
        assert "the small model's engine (transformers) reads no hidden states" in caplog.text
        assert load_delegator(RouteSettings(by="delegation"), "no-such-slm", "llm") is None
        assert "no delegation model ships for no-such-slm" in caplog.text
    broken = service(tmp_path, {"by": "delegation", "probe": str(tmp_path / "none")})
    assert broken.router is None  # logged, and the SLM solves
    assert list(broken.ask(Q))[-1].result.final_answer == "4"


def test_the_shipped_model_is_found_for_the_default_slm_and_turns_the_llms_states_on():
    from corea.service import CoreaService

    d = shipped_delegation_dir("Qwen2.5-Coder-0.5B-Instruct")
    assert d is not None
    shipped = dict(db_url="sqlite://", use_shipped_signals=True, use_shipped_adapter=True)
    svc = CoreaService(Settings(**shipped, slm={"route": {"by": "delegation"}}))
    router = svc.router  # the adapted default SLM reads its base model's prompt states
    assert isinstance(router, Delegator) and router.llm == "Qwen2.5-Coder-1.5B-Instruct"
    assert router.threshold == pytest.approx(load_delegation(d).card.route_threshold)
    pytest.importorskip("llama_cpp")
    assert svc.llm.hidden_states and svc.slm.hidden_states  # built, not loaded
    plain = CoreaService(Settings(**shipped))
    assert not plain.llm.hidden_states  # off by default: the LLM decodes as before


def test_the_shipped_model_is_refit_from_the_committed_train_rows():
    """The folder under ``corea/assets/probes/<slm>/delegation/`` is what ``corea delegation``
    fits on the committed GSM8K train rows (never a test row), with the τ_r that
    ``corea heldout --delegation`` chose on train in seconds (SLM free)."""
    from pathlib import Path

    from corea.cli.delegation import report_threshold
    from corea.eval.runs import load_results
    from corea.signals.delegation import delegation_values, fit_delegation

    root = Path(__file__).resolve().parent.parent
    saved = load_delegation(shipped_delegation_dir("Qwen2.5-Coder-0.5B-Instruct"))
    c = saved.card
    assert c.slm == "Qwen2.5-Coder-0.5B-Instruct" and c.llm == "Qwen2.5-Coder-1.5B-Instruct"
    assert c.data and all("/train," in d for d in c.data) and c.command.startswith(
        "corea delegation --train data/generations/gsm8k-train-1000")
    assert c.route_threshold == report_threshold(
        str(root / "data/generations/delegation-gsm8k.json"), "seconds")
    rows = load_results(root / "data/generations/gsm8k-train-1000")
    refit = fit_delegation(rows, c.slm)
    assert (refit.slm_probe.card.c, refit.llm_probe.card.c) == (c.c_slm, c.c_llm)
    np.testing.assert_allclose(refit.before.coef, saved.model.before.coef, rtol=1e-6)
    np.testing.assert_allclose(delegation_values(rows, refit),
                               delegation_values(rows, saved.model), atol=1e-4)
    assert c.n_train == len(rows) == 602


def test_corea_delegation_fits_on_train_only_and_needs_a_threshold(tmp_path, capsys):
    from pathlib import Path

    from corea.cli import main
    from corea.cli.delegation import report_threshold

    root = Path(__file__).resolve().parent.parent
    test_run, out = str(root / "data/generations/gsm8k-test-200"), str(tmp_path / "d")
    assert main(["delegation", "--train", test_run, "--out", out, "--threshold", "0.5"]) == 2
    assert "train splits only" in capsys.readouterr().err
    train = str(root / "data/generations/gsm8k-train-1000")
    assert main(["delegation", "--train", train, "--out", out, "--threshold", "1.5"]) == 2
    assert "[0, 1]" in capsys.readouterr().err
    (tmp_path / "r.json").write_text(json.dumps({"delegation": [{"unit": "usd", "ratio": 0.0}]}))
    assert main(["delegation", "--train", train, "--out", out,
                 "--from-report", str(tmp_path / "r.json")]) == 2
    assert "no delegation policy chosen in seconds" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    rep = str(root / "data/generations/delegation-gsm8k.json")
    assert report_threshold(rep, "usd") == pytest.approx(0.6154853261193808)
    with pytest.raises(SystemExit):  # one of --threshold / --from-report is required
        main(["delegation", "--train", train, "--out", out])


def test_a_routed_question_stopped_while_the_llm_answers_still_pays_its_prefill():
    import threading

    cancel = threading.Event()

    def reply(messages):
        cancel.set()  # the visitor presses Stop as the large model starts
        return "It is \\boxed{5} and more words here"

    settings = Settings(threshold=0.7, prices=PRICES, db_url="sqlite://")
    slm = FakeBackend(["\\boxed{4}\nConfidence: 0.9"], model_name="slm",
                      prompt_states=lambda m: HARD)
    llm = FakeBackend(reply, model_name="llm", prompt_states=lambda m: EASY)
    cascade = Cascade(slm, llm, settings, router=Delegator(model(), "llm", 0.4))
    r = list(cascade.run(Q, cancel=cancel))[-1].result
    assert r.status == "cancelled" and r.tiers[0].decision.reason == ROUTED
    assert r.tiers[1].output.prompt_tokens >= words(llm_messages(Q))  # at least its prefill
    assert r.cost_usd >= words(llm_messages(Q)) * 10.0 / 1e6
