"""Serve the web app on scripted backends (the load test starts two of these on one database).

    python tests/helpers/serve_fake.py DB_URL PORT

The SLM answers the number in the question ("... what is 1234?" -> \\boxed{1234}) with confidence
0.9 when the number is even (kept) and 0.3 when it is odd (deferred; the LLM answers the same
number), streaming a few chunks with a short delay like a fast model.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from corea.auth import Roles  # noqa: E402
from corea.backends.fake import FakeBackend  # noqa: E402
from corea.config import Settings  # noqa: E402
from corea.service import CoreaService  # noqa: E402


def _number(messages) -> int:
    text = " ".join(str(m.get("content", "")) if isinstance(m, dict) else str(m)
                    for m in messages)
    found = re.findall(r"what is (\d+)\?", text)
    return int(found[-1]) if found else -1


def slm(messages):
    n = _number(messages)
    return f"Working it out step by step. \\boxed{{{n}}}\nConfidence: {0.9 if n % 2 == 0 else 0.3}"


def llm(messages):
    return f"The answer is \\boxed{{{_number(messages)}}}."


def main() -> None:
    db_url, port = sys.argv[1], int(sys.argv[2])
    import app

    settings = Settings(threshold=0.7, db_url=db_url, max_concurrency=16, queue_size=512,
                        questions_per_minute=0, cache_dir=Path(os.environ.get(
                            "COREA_CACHE_DIR", "/tmp/corea-load-cache")))
    service = CoreaService(settings,
                           slm=FakeBackend(slm, model_name=settings.slm.name, chunk_chars=8,
                                           delay_s=0.005),
                           llm=FakeBackend(llm, model_name=settings.llm.name, chunk_chars=8,
                                           delay_s=0.005))
    demo = app.build_demo(service, roles=Roles(token="load-owner", host="0.0.0.0",
                                               on_space=False))
    demo.launch(server_name="127.0.0.1", server_port=port, quiet=True)


if __name__ == "__main__":
    main()
