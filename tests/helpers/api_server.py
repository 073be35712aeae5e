"""A COREA API server on scripted backends, for tests and benchmarks (``python
tests/helpers/api_server.py --port P --db URL``): the real app and server of ``corea serve``,
only the models are :class:`corea.backends.fake.FakeBackend` replies streamed with a delay.

``--confidence`` is the SLM's stated confidence (below ``--threshold`` the question goes to the
scripted LLM). Keys and limits come from the ``COREA_API_*`` variables, as for ``corea serve``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from corea.api import ApiSettings, create_api  # noqa: E402
from corea.api.server import serve  # noqa: E402
from corea.backends.base import Chunk, Usage  # noqa: E402
from corea.backends.fake import FakeBackend  # noqa: E402
from corea.config import Settings  # noqa: E402
from corea.service import CoreaService  # noqa: E402

WORDS = 40


class WordBackend(FakeBackend):
    """:class:`FakeBackend` streaming one word per chunk (about one token each, like a real
    engine), ``delay_s`` apart; the token budget and stop strings cut as in FakeBackend."""

    def _stream(self, prompt_words, text, params, states=None):
        if self.error is not None:
            raise self.error
        words = text.split(" ")
        finish = "stop"
        if len(words) > params.max_new_tokens:
            words, finish = words[:params.max_new_tokens], "length"
        text = " ".join(words)
        for stop in params.stop:
            if stop and stop in text:
                text, finish = text[: text.index(stop)], "stop"
        words = text.split(" ") if text else []
        done = False
        try:
            for i, w in enumerate(words):
                if self.delay_s:
                    time.sleep(self.delay_s)
                yield Chunk(text=(" " if i else "") + w)
            done = True
            yield Chunk(usage=Usage(prompt_words, len(text.split())), finish_reason=finish,
                        states=states)
        finally:
            if not done:
                self.closed_early += 1


def scripted_service(db_url: str, confidence: float = 0.9, threshold: float = 0.7,
                     delay_s: float = 0.0, words: int = WORDS) -> CoreaService:
    """A service whose SLM reasons for ``words`` words and states ``confidence``; its LLM
    answers in ``words`` words; one word per chunk, ``delay_s`` apart."""
    slm_text = " ".join(f"step{i}" for i in range(words)) + \
        f" \\boxed{{4}}\nConfidence: {confidence}"
    llm_text = " ".join(f"large{i}" for i in range(words)) + " \\boxed{4}"
    settings = Settings(threshold=threshold, db_url=db_url, use_probe=False,
                        confidence_source="verbal",
                        slm={"backend": "fake", "display_name": "scripted-slm"},
                        llm={"backend": "fake", "display_name": "scripted-llm"})
    slm = WordBackend([slm_text], continuations=[" 0.5"], model_name="scripted-slm",
                      delay_s=delay_s)
    llm = WordBackend([llm_text], model_name="scripted-llm", delay_s=delay_s)
    return CoreaService(settings, slm=slm, llm=llm)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", required=True, help="SQLAlchemy URL of the log")
    p.add_argument("--confidence", type=float, default=0.9)
    p.add_argument("--threshold", type=float, default=0.7)
    p.add_argument("--delay", type=float, default=0.0, help="seconds between chunks")
    p.add_argument("--words", type=int, default=WORDS)
    args = p.parse_args()
    service = scripted_service(args.db, args.confidence, args.threshold, args.delay, args.words)
    serve(create_api(service, ApiSettings()), "127.0.0.1", args.port, "warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
