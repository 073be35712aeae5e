"""The Ask tab's examples tell the truth: with a fresh clone's shipped defaults (τ 0.7,
``confidence_source=auto``, the shipped calibrator on the SLM with its calibration adapter), the
first example is kept (the small model's answer, right, at a deciding confidence ≥ τ) and the
second is deferred to the large model.

Real models (the embedded GGUF pair on llama.cpp, greedy). A change of adapter, signal or prompt
that flips an example fails here and says which, with the number that decided. Skipped with a
reason when llama-cpp-python or the weights are absent.
"""

from __future__ import annotations

import pytest

from corea.config import Settings
from corea.events import Final
from corea.grading import grade
from corea.service import CoreaService

pytestmark = pytest.mark.model
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (scripts/install.sh)")

# settings that would replace the shipped defaults this test is about
OVERRIDES = ("COREA_CONFIG", "COREA_THRESHOLD", "COREA_CONFIDENCE_SOURCE",
             "COREA_USE_SHIPPED_SIGNALS", "COREA_USE_SHIPPED_ADAPTER", "COREA_SLM__MODEL",
             "COREA_SLM__BACKEND", "COREA_LLM__MODEL", "COREA_LLM__BACKEND")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The app's service with the shipped defaults; only the log goes to a temporary file."""
    from corea.backends.weights import embedded_gguf

    mp = pytest.MonkeyPatch()
    for name in OVERRIDES:
        mp.delenv(name, raising=False)
    try:
        try:
            embedded_gguf("slm", Settings().cache_dir)
        except Exception as exc:  # noqa: BLE001 — no weights package here: say so
            pytest.skip(f"the embedded SLM's weights are not available: {exc}")
        db = tmp_path_factory.mktemp("examples") / "examples.sqlite"
        yield CoreaService(Settings(db_url=f"sqlite:///{db}"))
    finally:
        mp.undo()


def examples() -> tuple[str, str]:
    from corea.ui.ask import EXAMPLES

    assert len(EXAMPLES) == 2, "EXAMPLES holds one question that is kept, then one that defers"
    return EXAMPLES[0][0], EXAMPLES[1][0]


def outcome(service, question):
    events = list(service.ask(question, session_id="examples"))
    assert isinstance(events[-1], Final), events[-1]
    r = events[-1].result
    d = r.decision
    assert r.status == "ok", (r.status, d.message)
    number = "no confidence" if d.confidence is None else f"{d.confidence:.2f}"
    return r, d, f"{d.signal} {number}"


def test_the_first_example_is_kept_with_a_right_answer(service):
    question = examples()[0]
    r, d, said = outcome(service, question)
    assert not d.defer, (
        f"the example meant to show a kept answer now defers: {said} < τ {d.threshold:.2f} "
        f"({d.reason}: {d.message}) — choose another example or check the adapter/signal/prompt "
        f"change")
    assert r.final_model == r.slm.model and r.slm.finish_reason == "stop", r.slm.text[-300:]
    # the kept example's gold: Ivan's 20 dice + Jerry's 2 × 20 = 60
    g = grade(r.slm.answer, "60")
    assert g.correct, f"the kept example's answer is wrong: {r.slm.answer!r} ({said}), gold 60"


def test_the_second_example_is_deferred_to_the_large_model(service):
    question = examples()[1]
    r, d, said = outcome(service, question)
    assert d.defer, (
        f"the example meant to show a deferral is now kept: {said} ≥ τ {d.threshold:.2f} "
        f"({d.message}) — choose another example or check the adapter/signal/prompt change")
    assert r.final_model == r.llm.model and r.llm.answer, r.llm.text[-300:] if r.llm else None
