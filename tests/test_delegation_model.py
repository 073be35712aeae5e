"""Delegation routing on the real embedded pair (llama.cpp): both models prefill one question,
the shipped delegation model reads both states, and the cascade routes or solves with every
prefill charged."""

from __future__ import annotations

import pytest

from corea.config import Settings

pytestmark = pytest.mark.model
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (scripts/install.sh)")


def test_both_embedded_models_prefill_and_the_shipped_model_decides(tmp_path):
    from corea.cascade.delegate import Delegator
    from corea.prompts import llm_messages, slm_messages
    from corea.service import CoreaService

    s = Settings(db_url=f"sqlite:///{tmp_path / 'r.sqlite'}", use_shipped_adapter=False,
                 use_shipped_signals=True,
                 slm={"n_threads": 1, "max_new_tokens": 8, "route": {"by": "delegation"}},
                 llm={"n_threads": 1, "max_new_tokens": 8})
    svc = CoreaService(s)
    assert isinstance(svc.router, Delegator) and svc.llm.hidden_states
    q = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    r = list(svc.ask(q, threshold=0.7))[-1].result
    d = r.tiers[0].decision
    assert d.signal_note is None or "not routed" not in d.signal_note  # every read worked
    n_llm = svc.llm.prompt_state(llm_messages(q)).prompt_tokens
    n_slm = svc.slm.prompt_state(slm_messages(q)).prompt_tokens
    if d.reason == "routed":
        assert d.signal == "delegation" and 0.0 < d.confidence < svc.router.threshold
        assert r.tiers[0].output.prompt_tokens == n_slm  # its prefill only
        assert r.tiers[0].output.completion_tokens == 0
        assert r.tiers[1].output.prompt_tokens == 2 * n_llm  # its prefill and its answer
    elif d.defer:  # solved, then deferred: the LLM pays its prefill and its answer
        assert r.tiers[1].output.prompt_tokens >= 2 * n_llm
    else:  # kept: the SLM's output pays both prefills and its answer
        assert r.tiers[0].output.prompt_tokens >= 2 * n_slm + n_llm
    assert r.status == "ok" and r.cost_usd > 0
