"""The app's handlers on scripted backends and a temporary database (no browser, no model)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import app
from corea.auth import Roles
from corea.backends.base import BackendError
from corea.backends.fake import FakeBackend
from corea.config import Settings
from corea.service import CoreaService
from corea.ui.ask import AskHandlers
from corea.ui.history import HistoryHandlers


def service(tmp_path, slm_reply="Think. \\boxed{4}\nConfidence: 0.9", llm=None, **kw):
    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'log.sqlite'}", **kw)
    slm = FakeBackend([slm_reply], continuations=[" 0.5"], model_name="slm")
    llm = llm or FakeBackend(["Large: \\boxed{5}"], model_name="llm")
    return CoreaService(settings, slm=slm, llm=llm)


def req(session="s1"):
    return SimpleNamespace(session_hash=session)


def as_owner(svc, session="s1"):
    """Handlers whose browser session ``session`` signed in as the owner (the token)."""
    roles = Roles(token="t")
    roles.sign_in("t", req(session))
    return AskHandlers(svc, roles=roles)


def drain(handlers, question, threshold=0.7, history=None, my_ids=None, session="s1"):
    outs = list(handlers.respond(question, history or [], threshold, my_ids or [], req(session)))
    return outs


def test_module_exposes_demo_without_loading_models():
    assert app.demo is not None
    # the default service has not built any backend yet (models load lazily on first question)
    svc = AskHandlers(CoreaService(Settings(db_url="sqlite://"))).service
    assert svc._slm is None and svc._llm is None


def test_kept_answer_streams_and_logs(tmp_path):
    svc = service(tmp_path)
    h = AskHandlers(svc)
    outs = drain(h, "What is 2+2?")
    assert len(outs) > 3  # streamed in several updates
    history, box, details, target, my_ids = outs[-1]
    assert outs[0][1] == "" and box == {"__type__": "update"}  # cleared once, then left alone
    assert (history[0]["role"], history[0]["content"]) == ("user", "What is 2+2?")
    thinking = history[1]
    assert thinking["metadata"]["title"].startswith("🧠 Small model reasoning — slm")
    assert thinking["metadata"]["status"] == "done" and "duration" in thinking["metadata"]
    assert "Think." in thinking["content"]
    # while streaming the block was pending
    assert outs[2][0][1]["metadata"]["status"] == "pending"
    texts = [m["content"] for m in history]
    assert any("**Small model's answer:** 4" in t and "stated confidence: 90%" in t for t in texts)
    assert any("Answered by the small model — confidence 0.90 ≥ threshold 0.70" in t for t in texts)
    assert "by **slm**" in details and "cost $" in details and "logged as #1" in details
    assert my_ids == [[1, "What is 2+2?"]]
    assert target["value"] == 1 and target["choices"] == [("#1 — What is 2+2?", 1)]
    row = svc.store.get_interaction(1)
    assert row["question"] == "What is 2+2?" and row["session_id"] == "s1"
    assert row["decision_reason"] == "confident" and row["final_model"] == "slm"


def test_deferred_turn_shows_llm_and_rating_binds_to_row(tmp_path):
    svc = service(tmp_path, slm_reply="\\boxed{4}\nConfidence: 0.2")
    h = AskHandlers(svc)
    drain(h, "first question")
    history, _, details, _, my_ids = drain(h, "second question", my_ids=[[1, "first question"]])[-1]
    texts = [m["content"] for m in history]
    assert any("Deferred to the large model — confidence 0.20 < threshold 0.70" in t for t in texts)
    assert any(t.startswith("**Large model (llm):**") and "\\boxed{5}" in t for t in texts)
    assert "by **llm**" in details
    # rate the FIRST interaction although the second is on screen: bound to the id, not a position
    msg = h.rate("down", 1, " 42 ", "wrong arithmetic")
    assert msg == "Saved rating 👎 (#1) for interaction #1."
    r1, r2 = svc.store.get_interaction(1), svc.store.get_interaction(2)
    assert (r1["rating_thumbs"], r1["rating_correction"], r1["rating_comment"]) == \
        ("down", "42", "wrong arithmetic")
    assert r2["rating_thumbs"] is None
    assert h.rate("up", None, "", "").startswith("Ask a question first")
    assert h.rate("up", 999, "", "").startswith("⚠️")


def test_llm_unavailable_is_shown_and_logged(tmp_path):
    llm = FakeBackend(model_name="llm", error=BackendError("unreachable", "connection refused"))
    svc = service(tmp_path, slm_reply="\\boxed{4}\nConfidence: 0.1", llm=llm)
    history, _, details, _, _ = drain(as_owner(svc), "q")[-1]  # an owner sees the fault itself
    texts = "\n".join(m["content"] for m in history)
    assert "LLM unavailable (unreachable) — showing the small model's answer" in texts
    assert "by **slm**" in details
    row = svc.store.get_interaction(1)
    assert row["decision_reason"] == "llm_error" and row["final_answer"] == "4"


@pytest.mark.parametrize("q", ["", "   ", "x" * 5001], ids=["empty", "blank", "too_long"])
def test_bad_question_warns_and_logs_nothing(tmp_path, q):
    svc = service(tmp_path)
    outs = drain(AskHandlers(svc), q)
    assert len(outs) == 1 and outs[0][0] == [] and outs[0][1] == q
    assert svc.store.count() == 0


def test_backend_that_cannot_start_gives_a_message(tmp_path):
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'x.sqlite'}")
    settings.slm.backend = "openai"  # no key, no server: fails inside the stream, not at build
    svc = CoreaService(settings, llm=FakeBackend(["\\boxed{1}"], model_name="llm"))

    def boom():
        raise RuntimeError("no llama_cpp")
    svc.__class__ = type("Broken", (CoreaService,), {"cascade": property(lambda self: boom())})
    history, *_ = drain(as_owner(svc), "q")[-1]
    assert "could not be started: no llama_cpp" in history[-1]["content"]


def test_stop_cancels_and_logs_cancelled(tmp_path):
    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'log.sqlite'}")
    slm = FakeBackend(["word " * 300], model_name="slm", chunk_chars=3)
    svc = CoreaService(settings, slm=slm, llm=FakeBackend(["x"], model_name="llm"))
    h = AskHandlers(svc)
    gen = h.respond("long one", [], 0.7, [], req("s9"))
    outs = [next(gen) for _ in range(5)]
    h.stop(req("s9"))
    outs += list(gen)
    history = outs[-1][0]
    assert history[-2]["content"] == "⏹ Stopped."
    # the turn card: stopped before a decision, what the small model cost so far
    assert history[-1]["content"].startswith("⏹ **Stopped before a decision**")
    assert "| small · slm | no answer |" in history[-1]["content"]
    row = svc.store.get_interaction(1)
    assert row["status"] == "cancelled" and 0 < len(row["slm_output"]) < len("word " * 300)
    # the streamed part is counted and the thinking block no longer spins
    assert row["slm_completion_tokens"] > 0
    assert history[1]["metadata"]["status"] == "done"
    assert HistoryHandlers(svc).history_table("All", "All", "")[0][0][2] == "cancelled"


def test_corrupt_database_still_answers(tmp_path):
    bad = tmp_path / "corrupt.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    settings = Settings(db_url=f"sqlite:///{bad}", cache_dir=tmp_path / "cache")
    svc = CoreaService(settings, slm=FakeBackend(["\\boxed{4}\nConfidence: 0.9"], model_name="s"),
                       llm=FakeBackend(["x"], model_name="l"))
    assert svc.store is None and "not a valid SQLite database" in svc.logging_error
    h = as_owner(svc)
    history, _, details, _, my_ids = drain(h, "q")[-1]
    # the turn waits in the local journal, like one asked during a later outage
    assert any("Logging is paused" in m["content"] for m in history)
    (waiting, _), = my_ids  # a provisional id, offered for rating
    assert waiting < 0 and f"waiting in the journal as #{waiting}" in details
    assert HistoryHandlers(svc).history_table("All", "All", "")[1].startswith(
        "The log is offline: 1 turn waiting")
    assert h.rate("up", waiting, "", "").startswith(f"Kept rating 👍 for interaction #{waiting}")
    assert h.rate("up", 7, "", "").startswith("Kept rating")  # checked when the log is back
    assert "**off**" in h.model_info()
    assert svc.journal.counts() == {"turn": 1, "rating": 2}


def test_history_filters_and_export(tmp_path):
    svc = service(tmp_path, slm_reply="\\boxed{4}\nConfidence: 0.9")
    h = AskHandlers(svc)
    drain(h, "kept one")
    svc.settings.threshold = 0.95
    drain(h, "deferred one", threshold=0.95)
    h.rate("up", 2, "", "")
    rows, status = HistoryHandlers(svc).history_table("All", "All", "")
    assert [r[0] for r in rows] == [2, 1] and status.startswith("2 interaction")
    assert [r[-1] for r in rows] == ["slm: 4 (deferred) → llm: 5 ✓", "slm: 4 (kept) ✓"]
    assert [r[0] for r in HistoryHandlers(svc).history_table("Rated", "All", "")[0]] == [2]
    assert [r[0] for r in HistoryHandlers(svc).history_table("All", "Kept by SLM", "")[0]] == [1]
    assert [r[0] for r in HistoryHandlers(svc).history_table("All", "Deferred", "")[0]] == [2]
    path, msg = HistoryHandlers(svc).export_jsonl()
    lines = [json.loads(x) for x in open(path, encoding="utf-8")]
    assert msg == "Exported 1 rated interaction(s) of all sessions." and len(lines) == 1
    assert lines[0]["question"] == "deferred one" and lines[0]["rating_thumbs"] == "up"
    assert lines[0]["final_model"] == "llm" and lines[0]["decision_reason"] == "low_confidence"


def test_badge_shows_the_number_that_decided():
    """The badge used to compare the *stated* confidence with τ while another signal decided;
    then it showed two numbers (the deciding one and "stated 90%"): now one, named in words,
    with the stated one in its collapsed details."""
    from corea.events import DecisionInfo
    from corea.ui.ask import confidence_badge

    kept = DecisionInfo(False, "confident", 0.8, 0.7, "kept", "verbal", 0.8)
    assert confidence_badge(kept) == "🟢 **the small model's own stated confidence: 80%**"
    calibrated = DecisionInfo(True, "low_confidence", 0.41, 0.7, "deferred", "calibrated", 0.9)
    assert confidence_badge(calibrated) == \
        "🟠 **how sure the small model is, calibrated on past answers: 41%**"
    from corea.ui.turn_view import confidence_details

    assert "the small model's stated confidence: 90%" in confidence_details(calibrated)
    none = DecisionInfo(True, "no_confidence", None, 0.7, "deferred", "tokprob", 0.9)
    assert confidence_badge(none) == "⚪ **how likely the small model found its own words: none**"


def test_badge_details_show_the_expected_confidence_when_the_output_has_it():
    from corea.events import DecisionInfo
    from corea.ui.turn_view import confidence_details

    d = DecisionInfo(False, "confident", 0.79, 0.7, "kept", "calibrated", 0.1)
    out = SimpleNamespace(confidence_method="adapter", confidence_expected=0.23,
                          confidence_spread=0.05,
                          signals={"solution_prob": 0.93, "min_prob": 0.4, "n_tokens": 151})
    details = "\n".join(confidence_details(d, out))
    assert "stated confidence: 10% (written by the calibration adapter)" in details
    assert "expected confidence from its digit distribution: 23% (spread 5%)" in details
    assert "151 tokens" in details
    # an output without the expected confidence (no such field) still has its details
    assert not any("expected" in ln for ln in confidence_details(d, SimpleNamespace(signals=None)))


def test_one_confidence_per_turn_in_the_badge_the_details_line_and_history(tmp_path):
    """A turn decided by a signal other than the stated confidence shows one number: the badge,
    the details line under the chat and the History row agree (History showed the stated one)."""
    from corea.signals.tokens import TOKPROB

    slm = FakeBackend(["Think. \\boxed{4}\nConfidence: 0.9"], model_name="slm",
                      token_logprob=-0.5)
    settings = Settings(threshold=0.7, confidence_source=TOKPROB,
                        db_url=f"sqlite:///{tmp_path / 'log.sqlite'}")
    svc = CoreaService(settings, slm=slm, llm=FakeBackend(["Large: \\boxed{5}"],
                                                             model_name="llm"))
    history, _, details, _, _ = drain(AskHandlers(svc), "What is 2+2?")[-1]
    badge = next(m["content"] for m in history if "Small model's answer" in m["content"])
    number = f"{__import__('math').exp(-0.5) * 100:.0f}%"  # 61%: every token at p = e^-0.5
    assert f"how likely the small model found its own words: {number}**" in badge
    assert "90%" not in badge  # the stated number is one click away, not beside it
    from corea.ui.turn_view import DETAILS_TITLE

    behind = next(m for m in history if m["metadata"].get("title") == DETAILS_TITLE)
    assert "stated confidence: 90%" in behind["content"]
    assert f"how likely the small model found its own words: **{number}**" in details
    rows, _ = HistoryHandlers(svc).history_table("All", "All", "", req())
    assert rows[0][5] == number


def test_rating_again_says_the_latest_counts_and_a_contradiction_is_explained(tmp_path):
    svc = service(tmp_path)
    h = AskHandlers(svc)
    drain(h, "What is 2+2?")
    rid = svc.store.list_interactions()[0]["id"]
    assert "replaces" not in h.rate("up", rid, "", "")
    assert "replaces your earlier rating" in h.rate("down", rid, "", "")
    msg = h.rate("up", rid, "definitely not the answer 12345", "")
    assert msg.startswith("⚠️") and "👎" in msg


def test_each_turn_ends_with_its_card_and_the_session_adds_up(tmp_path):
    svc = service(tmp_path)
    h = AskHandlers(svc)
    outs = drain(h, "What is 2+2?", session="card-1")
    card = outs[-1][0][-1]["content"]
    assert "Kept the small model's answer" in card or "Deferred to the large model" in card
    assert "vs τ **0.70**" in card and "│" in card and "| model | answer |" in card
    assert "**Final answer:**" in card
    line = h.session_summary(req("card-1"))
    assert line.startswith("**This session:** 1 question(s)") and "large model alone" in line
    assert "No answered questions" in h.session_summary(req("someone-else"))


def test_card_helpers_doctests():
    import doctest

    import corea.ui.cards as cards

    assert doctest.testmod(cards).failed == 0


# ------------------------------------------------------------------- issue 33: nothing lost

def test_text_typed_while_an_answer_streams_is_kept(tmp_path):
    """Every streamed update used to set the question box to "", erasing what the visitor typed
    meanwhile: only the first update of an accepted question clears it."""
    outs = drain(AskHandlers(service(tmp_path)), "What is 2+2?")
    assert len(outs) > 3
    assert outs[0][1] == ""
    assert all(o[1] == {"__type__": "update"} for o in outs[1:])  # no value: the box is kept


def test_the_rating_form_clears_after_saving_and_keeps_a_refused_one(tmp_path):
    svc = service(tmp_path)
    h = AskHandlers(svc)
    drain(h, "What is 2+2?")
    msg, saved = h.rate_form("down", 1, " 5 ", "the sum is wrong", req())
    assert msg.startswith("Saved rating 👎") and saved
    assert h.form_after_rating(saved) == ("", "")  # the boxes are cleared
    assert svc.store.get_interaction(1)["rating_comment"] == "the sum is wrong"
    # not saved (no such turn): what was typed stays (no-op updates)
    msg, saved = h.rate_form("up", 999, "7", "typed text", req())
    assert msg.startswith("⚠️") and not saved
    assert h.form_after_rating(saved) == ({"__type__": "update"}, {"__type__": "update"})


def test_a_dead_llm_gives_one_warning(tmp_path):
    """A dead LLM used to write three lines saying the same thing (the LLM block's error, the
    decision line and the card); one warning now, in the LLM's block, for a visitor and for an
    owner (who also sees the error)."""
    from corea.auth import Roles

    owner = Roles(token="t", on_space=False)
    owner.sign_in("t", req("owner"))
    for roles, session in ((Roles(token="t", host="0.0.0.0", on_space=False), "visitor"),
                           (owner, "owner")):
        llm = FakeBackend(model_name="llm", error=BackendError("unreachable",
                                                              "connection refused"))
        svc = service(tmp_path / session, slm_reply="\\boxed{4}\nConfidence: 0.1", llm=llm)
        history = drain(AskHandlers(svc, roles=roles), "q", session=session)[-1][0]
        warned = [m["content"] for m in history if "⚠️" in m["content"]]
        assert len(warned) == 1, warned
        said = [m["content"] for m in history
                if any(w in m["content"].lower() for w in ("unavailable", "unreachable"))]
        assert said == warned
        assert warned[0].startswith("**Large model (llm):**")
        assert "showing the small model's answer" in warned[0]
        assert ("connection refused" in warned[0]) == (session == "owner")
        assert "Deferred to the large model" in history[-1]["content"]  # the card's verdict


def test_latex_in_model_text_is_made_renderable(tmp_path):
    """A bare \\boxed{72} was shown raw: it is put in math delimiters the chat renders
    (KaTeX); code and existing math are left alone, nothing becomes HTML."""
    from corea.ui.latex import math_markup

    llm = FakeBackend(["So: \\boxed{72}. Code: `\\boxed{1}`"], model_name="llm")
    svc = service(tmp_path, slm_reply="\\boxed{72}\nConfidence: 0.1", llm=llm)
    history = drain(AskHandlers(svc), "What is 48 + 24?")[-1][0]
    large = next(m["content"] for m in history if m["content"].startswith("**Large model"))
    assert "So: \\(\\boxed{72}\\)." in large and "`\\boxed{1}`" in large
    assert math_markup("\\[\\boxed{1}\\] \\boxed{2") == "\\[\\boxed{1}\\] \\boxed{2"
    assert math_markup("\\boxed{\\frac{1}{2}}") == "\\(\\boxed{\\frac{1}{2}}\\)"
    # model text is hostile: a tag or a Markdown image is shown as text (math and code are
    # text already: KaTeX and the code span render no HTML)
    assert math_markup("<b>x</b> \\boxed{<i>y</i>} a < b") == \
        "&lt;b>x&lt;/b> \\(\\boxed{<i>y</i>}\\) a < b"
    assert math_markup("![p](http://e/p.png) `<b>`") == "!\\[p](http://e/p.png) `<b>`"
    # idempotent: the chat sent back as the next turn's history is not wrapped twice
    assert math_markup(math_markup("\\boxed{3}")) == "\\(\\boxed{3}\\)"


def test_the_ask_tab_warns_of_a_dead_threshold(tmp_path):
    """τ that would have deferred every one of this session's recent turns (or none) is called
    dead, with the τ range that splits them; a τ that splits them says nothing."""
    from corea.ui.ask import AskHandlers

    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'log.sqlite'}")
    slm = FakeBackend(["\\boxed{4}\nConfidence: 0.3", "\\boxed{4}\nConfidence: 0.6"],
                      model_name="slm")
    svc = CoreaService(settings, slm=slm, llm=FakeBackend(["\\boxed{4}"], model_name="llm"))
    h = AskHandlers(svc)
    drain(h, "first", session="dead")
    assert h.threshold_note(0.7, req("dead")) == ""  # one turn says nothing yet
    drain(h, "second", session="dead")
    note = h.threshold_note(0.7, req("dead"))
    assert "Dead threshold" in note and "all 2 recent turns of this session" in note
    assert "τ in (0.3, 0.6] splits them" in note
    assert "none of the 2" in h.threshold_note(0.2, req("dead"))
    assert h.threshold_note(0.5, req("dead")) == ""
    assert h.threshold_note(0.7, req("another-session")) == ""


def test_a_latex_answer_renders_in_the_card_and_the_turn_line(tmp_path):
    svc = service(tmp_path, slm_reply="Half of 3/2. \\boxed{\\frac{3}{4}}\nConfidence: 0.9")
    history, _, details, _, _ = drain(AskHandlers(svc), "What is half of 3/2?")[-1]
    card = history[-1]["content"]
    assert "\\(\\frac{3}{4}\\)" in card and "\\(\\frac{3}{4}\\)" in details, (card, details)
    assert "**Final answer:** \\(\\frac{3}{4}\\)" in card


def test_session_summary_reports_money_and_seconds_and_says_why_it_cost_more(tmp_path):
    from corea.timing import TimeModel, TokenTime

    slm = FakeBackend(["Think. \\boxed{4}\nConfidence: 0.2"], model_name="slm", delay_s=0.002)
    svc = service(tmp_path, llm=FakeBackend(["Large: \\boxed{4}"], model_name="llm"))
    svc._slm = slm
    h = AskHandlers(svc)
    for q in ("What is 2+2?", "What is 3+1?"):
        outs = drain(h, q, session="both-units")
    card = outs[-1][0][-1]["content"]
    assert "This turn: cost $" in card and " s vs " in card
    assert "it was deferred, so it paid for both models" in card
    line = h.session_summary(req("both-units"))
    assert line.startswith("**This session:** 2 question(s) · 0 kept by the small model")
    assert "compute " in line and " s vs " in line
    # both deferred: the small model's seconds came on top of the large model's own
    assert "It cost more time than the large model alone: it deferred 2 of 2 question(s), " \
           "and each deferred one paid for both models" in line


def test_session_summary_estimates_a_kept_turn_with_the_time_model(tmp_path):
    from corea.timing import TimeModel, TokenTime

    svc = service(tmp_path)
    h = AskHandlers(svc)
    h.time_model = TimeModel(models={svc.settings.llm.name: TokenTime(overhead_s=30.0)})
    drain(h, "What is 2+2?", session="kept")
    line = h.session_summary(req("kept"))
    assert "1 kept by the small model" in line and "vs ≈ 30.0 s" in line
    assert "cost more" not in line
    h.time_model = None
    assert "no time model for the large model" in h.session_summary(req("kept"))
