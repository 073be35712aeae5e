"""Continuous batching on CPU: aggregate decode throughput of the llama.cpp backend with
``n_parallel`` sequences decoded together (what ``corea evaluate --workers N`` uses).

    python bench/batching.py                                  # SLM and LLM, 1/4/8/16 sequences
    python bench/batching.py --models slm --parallel 1 8 32 --json bench/results/batching.json

For each model and each N: N threads each send one distinct prompt at once (greedy,
``--max-new-tokens`` each, ``ignore_eos``-like prompts that ask for long text) through
:class:`corea.backends.llamacpp.LlamaCppBackend` with ``n_parallel = N``; reported are the wall
time, the prompt tokens and completion tokens processed, and completion tokens per second of wall
time (prefill included, so it is a lower bound on pure decode speed). Run it on an otherwise idle
machine: llama.cpp's threads spin and any other CPU load distorts the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corea.backends import make_backend  # noqa: E402
from corea.backends.base import GenerationParams, Message, collect  # noqa: E402
from corea.config import load_settings  # noqa: E402


def run(model: str, n: int, max_new: int) -> dict:
    s = load_settings()
    ms = getattr(s, model)
    ms = type(ms).model_validate({**ms.model_dump(), "n_parallel": n, "n_ctx": 2048})
    backend = make_backend(ms, s.cache_dir)
    backend.load()
    params = GenerationParams(max_new_tokens=max_new)
    prompts = [[Message("user", f"Write a long, detailed story about a lighthouse keeper "
                                f"named Keeper{i} and the number {i * 7}.")] for i in range(n)]
    out: list = [None] * n

    def work(i: int) -> None:
        out[i] = collect(backend.stream_chat(prompts[i], params))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    comp = sum(o[1].completion_tokens for o in out)
    prompt = sum(o[1].prompt_tokens for o in out)
    return {"model": ms.name, "n_parallel": n, "wall_s": round(wall, 2),
            "prompt_tokens": prompt, "completion_tokens": comp,
            "completion_tok_per_s": round(comp / wall, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["slm", "llm"], choices=["slm", "llm"])
    p.add_argument("--parallel", nargs="+", type=int, default=[1, 4, 8, 16])
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    results = []
    for m in args.models:
        for n in args.parallel:
            r = run(m, n, args.max_new_tokens)
            results.append(r)
            print(json.dumps(r), flush=True)
    if args.json:
        cpu = platform.processor() or platform.machine()
        Path(args.json).write_text(json.dumps({
            "command": "python bench/batching.py " + " ".join(sys.argv[1:]),
            "machine": {"cpu": cpu, "cores": len(os.sched_getaffinity(0)),
                        "python": platform.python_version()},
            "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
