"""Speculative decoding of the LLM's answer with drafts looked up in the SLM's solution.

Unit tests of the lookup drafter and its replay on token lists (no model), the settings and
parameters that turn it on, and real-model tests on the embedded 1.5B LLM: the greedy answer with
a hint is token-identical to the answer without one, and a good hint takes fewer forward passes.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from corea.backends.drafting import DraftStats, HintDrafter, replay
from corea.config import ModelSettings, Settings
from corea.types import GenerationParams, Message


# ------------------------------------------------------------------------------ the drafter
def test_proposes_what_followed_the_longest_match_in_the_hint():
    hint = [1, 2, 3, 4, 5, 6, 7, 8]
    d = HintDrafter(hint, max_tokens=3, min_match=2, max_match=4, context_lookup=False)
    assert d.propose([9, 9, 2, 3]) == [4, 5, 6]
    # a longer match wins over a shorter one that occurs elsewhere
    d = HintDrafter([5, 6, 10, 11, 4, 5, 6, 20, 21], max_tokens=2, min_match=2,
                    context_lookup=False)
    assert d.propose([0, 4, 5, 6]) == [20, 21]


def test_no_match_or_a_too_short_match_proposes_nothing():
    d = HintDrafter([1, 2, 3, 4], max_tokens=4, min_match=2, context_lookup=False)
    assert d.propose([7, 8, 9]) == []
    assert d.propose([9, 3]) == []      # "3" occurs, but one token is under min_match
    assert d.propose([3, 4]) == []      # the match ends the hint: nothing follows it
    assert d.propose([]) == [] and d.propose([1]) == []
    assert HintDrafter([], min_match=1).propose([1, 2, 3]) == []


def test_follows_the_hint_in_order_when_a_suffix_recurs():
    # "2 3" occurs twice; after matching the second occurrence the drafter prefers what comes
    # after its cursor over the first occurrence
    hint = [2, 3, 10, 0, 0, 2, 3, 20, 0, 2, 3, 30]
    d = HintDrafter(hint, max_tokens=1, min_match=2, max_match=2, context_lookup=False)
    assert d.propose([2, 3]) == [10]
    assert d.propose([0, 0, 2, 3]) == [20]
    assert d.propose([9, 2, 3]) == [30]
    assert d.propose([2, 3]) == [10]  # no occurrence after the cursor: the first one again


def test_falls_back_to_the_context_when_the_hint_has_no_match():
    d = HintDrafter([100, 101, 102], max_tokens=3, min_match=2)
    context = [5, 6, 7, 8, 1, 5, 6, 9, 9, 5, 6]
    assert d.propose(context) == [9, 9, 5]  # the most recent earlier "5 6"
    assert HintDrafter([100], min_match=2, context_lookup=False).propose(context) == []


def test_callable_like_a_llama_cpp_draft_model():
    np = pytest.importorskip("numpy")
    d = HintDrafter([1, 2, 3, 4, 5], max_tokens=2, min_match=2)
    out = d(np.array([7, 2, 3], dtype=np.intc))
    assert out.dtype == np.intc and out.tolist() == [4, 5]
    assert d(np.array([8, 9], dtype=np.intc)).tolist() == []


@pytest.mark.parametrize("kwargs", [{"max_tokens": 0}, {"min_match": 0},
                                    {"min_match": 5, "max_match": 4}])
def test_bad_drafter_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        HintDrafter([1, 2, 3], **kwargs)


# ------------------------------------------------------------------------------ replay
def test_replay_counts_passes_drafts_and_acceptances():
    prompt = [50, 51]
    output = [1, 2, 3, 4, 5, 6, 7]
    # the hint repeats the output but diverges after 5
    d = HintDrafter([1, 2, 3, 4, 5, 99, 7], max_tokens=3, min_match=2, context_lookup=False)
    s = replay(d, prompt, output)
    # pass 1 (prompt) -> 1; no 2-gram yet -> pass 2 yields 2; "1 2" -> draft [3,4,5] all
    # accepted + own 6 (pass 3); "5 6" not in the hint -> pass 4 yields 7
    assert (s.tokens, s.passes, s.drafted, s.accepted) == (7, 4, 3, 3)
    assert s.tokens_per_pass == pytest.approx(7 / 4) and s.acceptance == 1.0


def test_replay_without_a_useful_hint_is_one_token_per_pass():
    output = list(range(10, 30))
    s = replay(HintDrafter([1, 2, 3], min_match=2, context_lookup=False), [0], output)
    assert s.passes == s.tokens == len(output) and s.drafted == 0
    assert s.as_dict()["tokens_per_pass"] == 1.0
    assert replay(HintDrafter([1]), [0], []) == DraftStats()


def test_replay_a_rejected_draft_still_costs_its_pass():
    # the hint says "1 2 3 8 8" but the model writes "1 2 3 4 5": after "1 2" the draft
    # [3, 8] is verified, 3 agrees, 8 does not (the model's own token there is 4), so that pass
    # yields 3 and 4; the rejected 8 was still drafted and paid for
    s = replay(HintDrafter([1, 2, 3, 8, 8], max_tokens=2, min_match=2, context_lookup=False),
               [], [1, 2, 3, 4, 5])
    assert (s.tokens, s.passes, s.drafted, s.accepted) == (5, 4, 2, 1)
    assert s.acceptance == 0.5


# ------------------------------------------------------------------------------ settings
def test_settings_and_params_default_to_no_drafting():
    m = ModelSettings()
    assert m.speculative == "off" and m.draft_tokens >= 1 and m.draft_min_match >= 1
    assert GenerationParams().draft_hint is None
    assert m.generation_params().draft_hint is None


def test_speculative_is_set_from_the_environment(monkeypatch):
    monkeypatch.setenv("COREA_LLM__SPECULATIVE", "slm_lookup")
    monkeypatch.setenv("COREA_LLM__DRAFT_TOKENS", "1")
    s = Settings()
    assert s.llm.speculative == "slm_lookup" and s.llm.draft_tokens == 1
    assert s.slm.speculative == "off"
    with pytest.raises(ValueError):
        ModelSettings(speculative="draft_model")
    # more than 2 draft tokens would make the verifying pass round differently (not exact)
    for bad in (0, 3):
        with pytest.raises(ValueError, match="draft_tokens"):
            ModelSettings(draft_tokens=bad)


def test_the_fake_backend_ignores_a_hint():
    from corea.backends import collect
    from corea.backends.fake import FakeBackend

    fake = FakeBackend(["The answer is \\boxed{4}."], model_name="m")
    text, _, finish = collect(fake.stream_chat([Message("user", "2+2?")],
                                               GenerationParams(draft_hint="The answer is 4")))
    assert text == "The answer is \\boxed{4}." and finish == "stop"


# ------------------------------------------------------------------------------ real model
QUESTIONS = [
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
     "May. How many clips did Natalia sell altogether in April and May?",
     "To find out how many clips Natalia sold altogether in April and May, we need to follow "
     "these steps:\n\n1. Determine how many clips Natalia sold in May.\n2. Add the number of "
     "clips sold in April to the number of clips sold in May.\n\nStep 1: Natalia sold half as "
     "many clips in May as she did in April. Since she sold 48 clips in April, the number of "
     "clips she sold in May is 48 / 2 = 24.\n\nStep 2: 48 + 24 = 72.\n\n\\boxed{72}"),
    ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
     "How much did she earn?",
     "To determine how much Weng earned for 50 minutes of babysitting, we need to follow these "
     "steps:\n\n1. Convert the time from minutes to hours.\n2. Multiply the time in hours by her "
     "hourly rate.\n\nStep 1: 50 minutes is 50 / 60 = 5/6 hours.\n\nStep 2: 12 * 5/6 = 10.\n\n"
     "So Weng earned \\boxed{10} dollars."),
]


def _llm(tmp_path: Path, speculative: str):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from corea.backends.llamacpp import LlamaCppBackend

    threads = int(os.environ.get("COREA_LLM__N_THREADS", "1"))
    settings = ModelSettings(backend="llamacpp", model="embedded:llm", n_ctx=1024,
                             n_threads=threads, speculative=speculative)
    return LlamaCppBackend(settings, cache_dir=Settings().cache_dir)  # where weights assemble


@pytest.mark.model
def test_greedy_answer_is_identical_with_a_hint_and_takes_fewer_passes(tmp_path):
    from corea.backends import collect
    from corea.prompts import llm_messages

    llm = _llm(tmp_path, "slm_lookup")
    params = GenerationParams(max_new_tokens=64, temperature=0.0)
    for question, hint in QUESTIONS:
        msgs = llm_messages(question)
        reference = list(llm.stream_chat(msgs, params))  # no hint: one token per pass
        hinted = list(llm.stream_chat(msgs, dataclasses.replace(params, draft_hint=hint)))
        # the same text, token counts, finish reason and (bit for bit) log-probabilities
        assert collect(iter(hinted)) == collect(iter(reference)), question[:40]
        assert ([lp for c in hinted for lp in c.logprobs]
                == [lp for c in reference for lp in c.logprobs])
        stats = llm.last_draft
        n_out = collect(iter(reference))[1].completion_tokens
        assert stats.tokens in (n_out, n_out + 1)  # + the end-of-generation token, if reached
        assert stats.accepted > 0 and stats.passes < stats.tokens, stats
        # a hint that shares nothing with the answer saves less (only the answer's own repeats)
        unrelated = dataclasses.replace(params, draft_hint="zebra quantum violin")
        assert collect(llm.stream_chat(msgs, unrelated)) == collect(iter(reference))
        assert llm.last_draft.passes > stats.passes


@pytest.mark.model
def test_drafted_stream_stops_at_a_stop_string_and_at_the_budget(tmp_path):
    from corea.backends import collect
    from corea.prompts import llm_messages

    llm = _llm(tmp_path, "slm_lookup")
    question, hint = QUESTIONS[0]
    for params in (GenerationParams(max_new_tokens=48, stop=("Step 1",)),
                   GenerationParams(max_new_tokens=7)):
        reference = collect(llm.stream_chat(llm_messages(question), params))
        got = collect(llm.stream_chat(llm_messages(question),
                                      dataclasses.replace(params, draft_hint=hint)))
        assert got == reference
        assert llm.last_draft.tokens <= params.max_new_tokens
    assert got[1].completion_tokens == 7 and got[2] == "length"
    # sampled decoding is never drafted (the hint is ignored)
    llm.last_draft = None
    collect(llm.stream_chat(llm_messages(question),
                            GenerationParams(max_new_tokens=4, temperature=0.7, draft_hint=hint)))
    assert llm.last_draft is None


def test_the_cascade_gives_the_last_tier_the_earlier_solutions_as_a_draft_hint():
    """A deferred question's LLM call carries the SLM's solution as ``draft_hint``; a question
    deferred before the SLM solved gives none."""
    from corea.backends.fake import FakeBackend
    from corea.cascade import Cascade
    from corea.config import Settings

    seen = []

    class Recording(FakeBackend):
        def stream_chat(self, messages, params):
            seen.append(params.draft_hint)
            return super().stream_chat(messages, params)

    slm = FakeBackend(["2 + 2 is \\boxed{4}\nConfidence: 0.1"], model_name="slm")
    llm = Recording(["It is \\boxed{4}."], model_name="llm")
    settings = Settings(confidence_source="verbal")
    list(Cascade(slm, llm, settings).run("2+2?", threshold=0.7))
    assert seen and seen[-1] is not None and "\\boxed{4}" in seen[-1]
    seen.clear()  # deferred before solving (confidence first): nothing to draft from
    slm = FakeBackend(["unused"], continuations=[" 0.1"], model_name="slm")
    first = Settings(confidence_source="verbal", deferral_order="confidence_first")
    list(Cascade(slm, Recording(["It is \\boxed{4}."], model_name="llm"), first).run(
        "2+2?", threshold=0.7))
    assert seen == [None]
