"""Speed benchmark on the embedded weights: load time, time to first token, decode tokens/s, and the
cascade's own overhead.

    python bench/speed.py                                  # llama.cpp, SLM and LLM
    python bench/speed.py --engines llamacpp transformers  # both engines side by side
    python bench/speed.py --json bench/results/speed.json  # also write the numbers

What is measured (wall clock, this process, greedy decoding, one question at a time):

- load_s: first-call model load (GGUF already assembled in the cache; for transformers the cached
  safetensors conversion is loaded — the one-time conversion is reported separately if it ran).
- ttft_s: time from the request to the first streamed text (median over ``--repeats``).
- decode_tok_s: completion tokens / (last token time − first token time) (median).
- cascade overhead: the SLM's decode tokens/s through ``Cascade.run`` (τ = 0, free mode, so no
  deferral and no forced suffix) against the bare backend on the same prompt, alternated
  ``--repeats`` times; overhead = 1 − cascade/bare (target < 5%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corea.backends import make_backend  # noqa: E402
from corea.cascade import Cascade  # noqa: E402
from corea.config import EMBEDDED_LLM, EMBEDDED_SLM, ModelSettings, Settings  # noqa: E402
from corea.events import SLMDelta, SLMDone  # noqa: E402
from corea.prompts import slm_messages  # noqa: E402

# Distinct questions per run, so each time-to-first-token includes a fresh prompt (only the shared
# system prompt can come from llama.cpp's prefix cache, as in real use).
QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
    "May. How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money "
    "she needs. Her parents give her $15, and her grandparents twice as much as her parents. "
    "How much more money does Betty need to buy the wallet?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he "
    "write a year?",
    "Albert buys 2 large pizzas and 2 small pizzas. A large pizza has 16 slices and a small pizza "
    "has 8 slices. If he eats it all, how many pieces does he eat that day?",
    "Ken created a care package to send to his brother. He placed a box on a scale, and then he "
    "poured into the box enough jelly beans to bring the weight to 2 pounds. How heavy is it?",
    "Alexis bought a $30 blouse, $46 shoes, and $11 socks with a $200 budget. How much is left?",
    "Tina makes $18.00 an hour. How much does she make working 10 hours at her regular rate?",
]
_next = 0


def next_question() -> str:
    global _next
    _next += 1
    return QUESTIONS[(_next - 1) % len(QUESTIONS)]


def bare_run(backend, settings: ModelSettings, question: str) -> dict:
    t0 = time.perf_counter()
    first = last = None
    usage = None
    for ch in backend.stream_chat(slm_messages(question), settings.generation_params()):
        now = time.perf_counter()
        if ch.text:
            first = first or now
            last = now
        if ch.usage is not None:
            usage = ch.usage
    n = usage.completion_tokens if usage else 0
    return {"ttft_s": (first - t0) if first else None, "tokens": n,
            "decode_tok_s": (n - 1) / (last - first) if first and last and last > first else None}


def cascade_run(cascade: Cascade, question: str) -> dict:
    t0 = time.perf_counter()
    first = last = None
    out = None
    for ev in cascade.run(question, threshold=0.0):
        now = time.perf_counter()
        if isinstance(ev, SLMDelta):
            first = first or now
            last = now
        elif isinstance(ev, SLMDone):
            out = ev.output
    n = out.completion_tokens
    return {"ttft_s": first - t0, "tokens": n, "decode_tok_s": (n - 1) / (last - first)}


def med(rows, key):
    vals = [r[key] for r in rows if r[key] is not None]
    return round(statistics.median(vals), 3) if vals else None


def bench_model(engine: str, which: str, args, cache_dir: Path) -> dict:
    model = EMBEDDED_SLM if which == "slm" else EMBEDDED_LLM
    ms = ModelSettings(backend=engine, model=model, max_new_tokens=args.max_new_tokens,
                       n_threads=args.threads)
    backend = make_backend(ms, cache_dir)
    conv = None
    if engine == "transformers":
        from corea.backends.weights import safetensors_checkpoint
        t = time.perf_counter()
        safetensors_checkpoint(model, cache_dir)
        conv = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - t
    bare_run(backend, ModelSettings(backend=engine, model=model, max_new_tokens=1), QUESTIONS[-1])
    rows = [bare_run(backend, ms, next_question()) for _ in range(args.repeats)]
    res = {"engine": engine, "model": ms.name, "load_s": round(load_s, 2),
           "conversion_or_cache_check_s": conv, "ttft_s": med(rows, "ttft_s"),
           "decode_tok_s": med(rows, "decode_tok_s"), "tokens": rows[0]["tokens"],
           "peak_rss_gib": round(_peak_rss_gib(), 2)}
    if which == "slm" and args.overhead:
        settings = Settings(slm=ms, confidence_mode="free", db_url="sqlite://")
        cascade = Cascade(backend, backend, settings)
        pairs = []
        for _ in range(args.repeats):
            b = bare_run(backend, ms, next_question())
            c = cascade_run(cascade, next_question())
            pairs.append((b["decode_tok_s"], c["decode_tok_s"]))
        bare = statistics.median(p[0] for p in pairs)
        casc = statistics.median(p[1] for p in pairs)
        res["cascade_decode_tok_s"] = round(casc, 3)
        res["bare_decode_tok_s"] = round(bare, 3)
        res["cascade_overhead"] = round(1 - casc / bare, 4)
    return res


def _peak_rss_gib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engines", nargs="+", default=["llamacpp"],
                   choices=["llamacpp", "transformers"])
    p.add_argument("--models", nargs="+", default=["slm", "llm"], choices=["slm", "llm"])
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-overhead", dest="overhead", action="store_false")
    p.add_argument("--cache-dir", default=os.environ.get("COREA_CACHE_DIR",
                                                         str(Path("~/.cache/corea").expanduser())))
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    machine = {"python": platform.python_version(), "machine": platform.machine(),
               "cpus": os.cpu_count(), "processor": _cpu_name()}
    if len(args.engines) * len(args.models) > 1:
        print(json.dumps({"machine": machine}), flush=True)
    results = []
    if len(args.engines) * len(args.models) == 1:
        r = bench_model(args.engines[0], args.models[0], args, Path(args.cache_dir))
        print(json.dumps(r), flush=True)
        results.append(r)
    else:  # one fresh process per (engine, model): clean load times and peak memory
        import subprocess
        for engine in args.engines:
            for which in args.models:
                cmd = [sys.executable, __file__, "--engines", engine, "--models", which,
                       "--max-new-tokens", str(args.max_new_tokens), "--repeats",
                       str(args.repeats), "--cache-dir", args.cache_dir]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                if not args.overhead:
                    cmd.append("--no-overhead")
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(json.dumps(r), flush=True)
                results.append(r)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine, "results": results,
                                               "args": vars(args)}, indent=2))
    return 0


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
