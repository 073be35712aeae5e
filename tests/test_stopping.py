"""The stop rule (corea.stopping): a deciding tier's free solution ends at the first line end
after its answer and stated confidence — in the rule itself, the stream wrapper, the cascade
(with and without a calibration adapter) and the training rollouts."""

from __future__ import annotations

from corea.backends.base import Chunk, GenerationParams, Message, collect
from corea.backends.fake import FakeBackend
from corea.cascade import Cascade
from corea.config import Price, Settings
from corea.events import Final
from corea.stopping import answered_at, cut_text, cut_tokens, stop_when_answered

PRICES = {"slm": Price(input_per_mtok=1.0, output_per_mtok=2.0),
          "llm": Price(input_per_mtok=10.0, output_per_mtok=20.0)}

ANSWERED = "So 6 times 7 is \\boxed{42}.\nConfidence: 0.9"
# what the 0.5B SLM writes after that (the committed GSM8K rows): a made-up probability
RAMBLE = ("\n\nTo state how likely it is that your final answer is correct, as a probability "
          "between 0 and 1, we compute 42 / 60 = 0.7. Confidence: 0.9")


def test_the_rule_stops_at_the_line_end_after_the_answer_and_the_confidence():
    text = ANSWERED + RAMBLE
    assert answered_at(text) == len(ANSWERED)
    assert cut_text(text) == ANSWERED
    # never inside a line: "Confidence: 0.9" may still become 0.95
    assert answered_at(ANSWERED) is None
    # an answer without a confidence is not done, unless an adapter states it
    assert answered_at("\\boxed{42}\nand more\n") is None
    assert answered_at("\\boxed{42}\nand more\n", confidence=False) == len("\\boxed{42}")
    # a confidence before the answer: it stops after the answer's line
    text = "Confidence: 0.8\nThe answer is \\boxed{3}\nMore text"
    assert cut_text(text) == "Confidence: 0.8\nThe answer is \\boxed{3}"
    # no answer, no stop
    assert answered_at("Step 1: 2 + 2 = 4\nConfidence: 0.9\nStep 2\n") is None


def test_the_wrapper_closes_the_engine_and_counts_what_was_generated():
    slm = FakeBackend([ANSWERED + RAMBLE], chunk_chars=5, token_logprob=-0.1)
    params = GenerationParams()
    stream = stop_when_answered(slm.stream_chat([Message("user", "q")], params))
    text, usage, finish = collect(stream)
    assert text == ANSWERED and finish == "stop"
    assert slm.closed_early == 1, "the engine's stream must be closed (generation cancelled)"
    # one logprob pair per fake chunk: the chunks streamed until the line end was seen
    n_chunks = -(-(len(ANSWERED) + 1) // 5)
    assert usage.completion_tokens == n_chunks and usage.prompt_tokens == 1
    # a stream that never answers passes through untouched, with the engine's own usage
    plain = FakeBackend(["no answer here\nnone\n"])
    text, usage, finish = collect(stop_when_answered(
        plain.stream_chat([Message("user", "q")], params)))
    assert text == "no answer here\nnone\n" and usage.completion_tokens == 4


def test_the_wrapper_cuts_inside_a_chunk_and_keeps_its_tokens():
    chunks = iter([Chunk(prompt_tokens=7), Chunk("\\boxed{1}", logprobs=(("a", -0.1),)),
                   Chunk("\nConfidence: 0.5\nmore", logprobs=(("b", -0.2), ("c", -0.3))),
                   Chunk(usage=None, finish_reason="stop")])
    out = list(stop_when_answered(chunks))
    assert "".join(c.text for c in out) == "\\boxed{1}\nConfidence: 0.5"
    assert out[-1].usage.prompt_tokens == 7 and out[-1].usage.completion_tokens == 3
    assert out[-2].logprobs == (("b", -0.2), ("c", -0.3))


def _cascade(slm):
    settings = Settings(threshold=0.5, prices=PRICES, db_url="sqlite://")
    return Cascade(slm, FakeBackend(["It is \\boxed{5}"], model_name="llm"), settings)


def _result(cascade):
    return [e for e in cascade.run("What is 6*7?") if isinstance(e, Final)][0].result


def test_the_cascade_stops_a_rambling_small_model_with_the_same_answer_and_confidence():
    slm = FakeBackend([ANSWERED + RAMBLE], continuations=[" 0.5"], model_name="slm")
    r = _result(_cascade(slm))
    assert r.slm.text == ANSWERED and r.slm.finish_reason == "stop"
    assert (r.slm.answer, r.slm.confidence, r.slm.confidence_method) == ("42", 0.9, "free")
    assert slm.closed_early == 1
    assert r.slm.completion_tokens < len((ANSWERED + RAMBLE).split())
    assert not r.decision.defer


def test_with_a_calibration_adapter_the_base_stops_by_the_same_rule():
    slm = FakeBackend([ANSWERED + RAMBLE], continuations=[" 0.5"], model_name="slm",
                      stated_confidence=["\nConfidence: 0.7"])
    r = _result(_cascade(slm))
    assert slm.closed_early == 1  # the base's ramble after its confidence line is not generated
    # the adapter continues the base's solution without its confidence line, as before
    assert r.slm.text == "So 6 times 7 is \\boxed{42}.\nConfidence: 0.7"
    assert (r.slm.answer, r.slm.confidence, r.slm.confidence_method) == ("42", 0.7, "adapter")


def test_the_last_tier_is_not_stopped():
    llm = FakeBackend(["It is \\boxed{5}\nConfidence: 0.9\nmore words"], model_name="llm")
    slm = FakeBackend(["\\boxed{4}\nConfidence: 0.1"], model_name="slm")
    settings = Settings(threshold=0.5, prices=PRICES, db_url="sqlite://")
    r = _result(Cascade(slm, llm, settings))
    assert r.llm.text.endswith("more words") and llm.closed_early == 0


class _Chars:
    """A character tokenizer: one token per character (decode joins them)."""

    @staticmethod
    def decode(ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if i != 0)


def test_cut_tokens_and_the_rollout_end_a_completion_where_the_cascade_would():
    text = ANSWERED + RAMBLE
    ids = [ord(c) for c in text]
    assert cut_tokens(ids, _Chars.decode) == len(ANSWERED) + 1  # through the "\n" token
    from train.rollout import stop_answered

    out, mask = stop_answered(_Chars, ids + [0], {0}, 0)
    assert _Chars.decode(out) == ANSWERED + "\n" and out[-1] == 0
    assert mask == [1] * (len(ANSWERED) + 1) + [0]
    # a completion that never answers is left whole
    plain = [ord(c) for c in "no answer\n"] + [0]
    assert stop_answered(_Chars, plain, {0}, 0) == (plain, [1] * len(plain))


def test_the_stop_rule_is_part_of_a_chain_of_thought_runs_identity_only(monkeypatch):
    """A run folder made before the rule is not resumed under it; a program-of-thought run (whose
    solution the rule does not end) keeps its identity and resumes."""
    from corea.eval import harness

    cot, pot = harness.prompt_version(), harness.prompt_version(program=True)
    monkeypatch.setattr(harness, "STOP_RULES", "2: another rule")
    assert harness.prompt_version() != cot
    assert harness.prompt_version(program=True) == pot
