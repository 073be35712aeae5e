"""Pre-generation routing on the real embedded SLM (llama.cpp): the state a route check reads
after the question is the one the generating decode records, and the shipped prompt probe
decides on it."""

from __future__ import annotations

import numpy as np
import pytest

from corea.config import ModelSettings, RouteSettings, Settings

pytestmark = pytest.mark.model
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (scripts/install.sh)")


def test_the_route_check_reads_the_state_the_generating_decode_records(tmp_path):
    from corea.backends import make_backend
    from corea.cascade.route import load_router
    from corea.prompts import slm_messages
    from corea.signals import hidden
    from corea.types import GenerationParams

    s = Settings(db_url=f"sqlite:///{tmp_path / 'r.sqlite'}",
                 slm=ModelSettings(backend="llamacpp", model="embedded:slm", max_new_tokens=4, n_threads=1,
                                   hidden_states=True))
    slm = make_backend(s.slm, s.cache_dir)
    msgs = slm_messages("Tom has 3 apples and buys 4 more. How many apples does he have?")
    got = slm.prompt_state(msgs)
    final = [c for c in slm.stream_chat(msgs, GenerationParams(max_new_tokens=2)) if c.states]
    seen = np.asarray(final[-1].states["prompt"], dtype=np.float64)
    assert got.state.shape == (896,) and got.prompt_tokens > 20
    np.testing.assert_allclose(np.asarray(got.state, dtype=np.float64), seen, rtol=1e-4,
                               atol=1e-4)
    router = load_router(RouteSettings(), s.slm.name)
    p = float(router.probe.confidence(got.state)[0])
    assert 0.0 < p < 1.0
    assert hidden.decode(hidden.encode(got.state)).shape == (896,)
