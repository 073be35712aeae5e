"""Early exit on the real embedded SLM (llama.cpp): the states one prefill of a written
completion gives are the states the generating decode carried every k tokens."""

from __future__ import annotations

import numpy as np
import pytest

from corea.config import ModelSettings, Settings

pytestmark = pytest.mark.model
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (scripts/install.sh)")


def test_a_prefill_gives_the_states_the_decode_carried_at_each_checkpoint(tmp_path):
    from corea.backends import make_backend
    from corea.prompts import slm_messages
    from corea.types import GenerationParams

    s = Settings(db_url=f"sqlite:///{tmp_path / 'r.sqlite'}",
                 slm=ModelSettings(backend="llamacpp", model="embedded:slm", n_threads=1,
                                   hidden_states=True))
    slm = make_backend(s.slm, s.cache_dir)
    msgs = slm_messages("Tom has 3 apples and buys 4 more. How many apples does he have?")
    text, written, live = "", 0, {}
    for ch in slm.stream_chat(msgs, GenerationParams(max_new_tokens=40, temperature=0.0)):
        text += ch.text
        written += len(ch.logprobs)
        if ch.text and ch.states and (written - 1) in (8, 16, 24, 32):
            live[written - 1] = np.asarray(ch.states["end"], dtype=np.float64)
    assert len(live) >= 2
    got = slm.completion_states(msgs, text, sorted(live))
    assert got.completion_tokens == written and got.states.shape == (len(live), 896)
    for t, x in zip(got.positions, got.states):
        y = live[t]
        assert x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) > 0.999
