"""API benchmark: the OpenAI-compatible server against ``Cascade.run`` in-process, and latency
under concurrent clients.

    python bench/api.py                         # scripted backend, writes bench/results/api.json
    python bench/api.py --embedded --prompts 2  # overhead part on the embedded llama.cpp pair too

1. **Overhead** (same service, same prompts, alternated): each prompt is answered in-process
   (``CoreaService.ask``, i.e. ``Cascade.run`` plus the log) and through the API (the official
   ``openai`` client streaming from a uvicorn server on 127.0.0.1 in this process, with
   ``corea.include_reasoning`` so the SLM's tokens stream live as in-process). Measured per run:
   time to the first streamed token (``ttft_s``) and decode speed: (streamed chunks − 1) /
   (last − first chunk time). Reported: the medians, the API/in-process decode ratio (target ≥ 0.95) and
   the added time to first token (target ≤ 50 ms). Both questions are deferred (τ = 1), so both
   tiers stream.
2. **Concurrency** (scripted backend only): a server process (``tests/helpers/api_server.py``,
   the real app on scripted models that stream one word every ``--delay`` s) and 1, 4 and 16
   client threads, each sending streamed requests back to back; p50/p99 of the whole request's
   latency and of its time to first token.

The scripted backend streams one word per chunk with a fixed delay, so its numbers are the API's
own cost; the embedded pair's are what a user sees on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

import httpx  # noqa: E402
import openai  # noqa: E402

from corea.api import ApiSettings, create_api  # noqa: E402
from corea.events import LLMDelta, SLMDelta  # noqa: E402

KEY = "bench-key"
PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
    "May. How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he "
    "write a year?",
    "Tina makes $18.00 an hour. How much does she make working 10 hours at her regular rate?",
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def speed(times: list[float], t0: float) -> tuple[float | None, float | None]:
    """``(ttft_s, decode chunks/s)`` from the arrival times of the streamed chunks."""
    if not times:
        return None, None
    ttft = times[0] - t0
    if len(times) < 2 or times[-1] == times[0]:
        return ttft, None
    return ttft, (len(times) - 1) / (times[-1] - times[0])


def in_process(service, prompt: str, tau: float, max_tokens: int | None):
    from corea.backends.overrides import TierParams

    params = [TierParams(max_new_tokens=max_tokens)] * 2 if max_tokens else None
    t0 = time.perf_counter()
    times = []
    for ev in service.ask(prompt, threshold=tau, session_id="bench-inproc", tier_params=params):
        if isinstance(ev, (SLMDelta, LLMDelta)) and ev.text:
            times.append(time.perf_counter())
    return speed(times, t0)


def through_api(client, prompt: str, tau: float, max_tokens: int | None):
    t0 = time.perf_counter()
    times, first_content = [], None
    stream = client.chat.completions.create(
        model=f"corea:{tau}", messages=[{"role": "user", "content": prompt}], stream=True,
        max_tokens=max_tokens, extra_body={"corea": {"include_reasoning": True,
                                                     "progress": False}})
    for chunk in stream:
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        if d.content or (d.model_extra or {}).get("reasoning_content"):
            times.append(time.perf_counter())
            if d.content and first_content is None:
                first_content = times[-1] - t0
    ttft, tps = speed(times, t0)
    return ttft, tps, first_content


def serve_in_thread(app):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}/v1"


def overhead(service, label: str, prompts: list[str], repeats: int,
             max_tokens: int | None) -> dict:
    server, base = serve_in_thread(create_api(service, ApiSettings(keys=KEY,
                                                                   rate_per_minute=0)))
    client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=600)
    rows = []
    try:
        in_process(service, prompts[0], 1.0, max_tokens)  # warm-up (loads models)
        through_api(client, prompts[0], 1.0, max_tokens)
        for r in range(repeats):
            for p in prompts:
                a = in_process(service, p, 1.0, max_tokens)
                b = through_api(client, p, 1.0, max_tokens)
                rows.append({"prompt": p[:40], "repeat": r, "inproc_ttft_s": a[0],
                             "inproc_tok_s": a[1], "api_ttft_s": b[0], "api_tok_s": b[1],
                             "api_first_content_s": b[2]})
    finally:
        server.should_exit = True
    med = lambda k: statistics.median(x[k] for x in rows if x[k] is not None)  # noqa: E731
    added = statistics.median(x["api_ttft_s"] - x["inproc_ttft_s"] for x in rows)
    out = {"backend": label, "runs": len(rows), "inproc_ttft_s": med("inproc_ttft_s"),
           "api_ttft_s": med("api_ttft_s"), "added_ttft_ms": 1000 * added,
           "inproc_tok_s": med("inproc_tok_s"), "api_tok_s": med("api_tok_s"),
           "decode_ratio": med("api_tok_s") / med("inproc_tok_s"),
           "api_first_content_s": med("api_first_content_s"), "rows": rows}
    print(f"[overhead {label}] TTFT in-process {out['inproc_ttft_s'] * 1000:.1f} ms, API "
          f"{out['api_ttft_s'] * 1000:.1f} ms (+{out['added_ttft_ms']:.1f} ms); decode "
          f"{out['inproc_tok_s']:.1f} → {out['api_tok_s']:.1f} chunks/s "
          f"(×{out['decode_ratio']:.3f})", flush=True)
    return out


def concurrency(levels: list[int], requests: int, delay: float, words: int,
                tmp: Path) -> list[dict]:
    port = free_port()
    env = {**os.environ, "COREA_API_KEYS": KEY, "COREA_API_MAX_CONCURRENT": "64",
           "COREA_API_MAX_CONCURRENT_TOTAL": "64", "COREA_API_RATE_PER_MINUTE": "0"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "helpers" / "api_server.py"),
                             "--port", str(port), "--db", f"sqlite:///{tmp / 'bench.sqlite'}",
                             "--confidence", "0.3", "--delay", str(delay), "--words",
                             str(words)], env=env)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {KEY}"},
                             timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark server did not start")
            time.sleep(0.1)
        results = []
        for n in levels:
            per_client = max(1, requests // n)

            def client_loop(_i):
                client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=120)
                out = []
                for _ in range(per_client):
                    t0 = time.perf_counter()
                    first = None
                    for chunk in client.chat.completions.create(
                            model="corea", messages=[{"role": "user", "content": "q"}],
                            stream=True):
                        if first is None and chunk.choices and chunk.choices[0].delta.content:
                            first = time.perf_counter() - t0
                    out.append((time.perf_counter() - t0, first))
                return out

            t0 = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                lat = [x for xs in pool.map(client_loop, range(n)) for x in xs]
            wall = time.perf_counter() - t0
            total = [x[0] for x in lat]
            first = [x[1] for x in lat if x[1] is not None]
            row = {"clients": n, "requests": len(lat), "p50_s": pct(total, 0.5),
                   "p99_s": pct(total, 0.99), "ttfc_p50_s": pct(first, 0.5),
                   "ttfc_p99_s": pct(first, 0.99), "requests_per_s": len(lat) / wall}
            print(f"[concurrency] {n:>2} clients: p50 {row['p50_s'] * 1000:.0f} ms, p99 "
                  f"{row['p99_s'] * 1000:.0f} ms, first content p50 "
                  f"{row['ttfc_p50_s'] * 1000:.0f} ms, {row['requests_per_s']:.1f} req/s",
                  flush=True)
            results.append(row)
        return results
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "api.json"))
    p.add_argument("--repeats", type=int, default=5, help="overhead: rounds over the prompts")
    p.add_argument("--prompts", type=int, default=len(PROMPTS))
    p.add_argument("--delay", type=float, default=0.01,
                   help="scripted backend: seconds between chunks (0.01 = 100 tokens/s)")
    p.add_argument("--words", type=int, default=60, help="scripted backend: words per reply")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=48,
                   help="concurrency: requests per level (split over the clients)")
    p.add_argument("--embedded", action="store_true",
                   help="also measure the overhead on the embedded llama.cpp pair")
    p.add_argument("--max-tokens", type=int, default=48, help="embedded: max_tokens per tier")
    p.add_argument("--threads", type=int, default=1,
                   help="embedded: llama.cpp threads per model (1 on a busy machine)")
    args = p.parse_args()

    import tempfile

    from api_server import scripted_service

    tmp = Path(tempfile.mkdtemp(prefix="corea-bench-api-"))
    prompts = PROMPTS[:args.prompts]
    out = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "load_avg_at_start": os.getloadavg()},
           "scripted": {"delay_s": args.delay, "words": args.words}}
    svc = scripted_service(f"sqlite:///{tmp / 'overhead.sqlite'}", confidence=0.3,
                           delay_s=args.delay, words=args.words)
    out["overhead"] = [overhead(svc, "scripted", prompts, args.repeats, None)]
    if args.embedded:
        from corea.config import ModelSettings, Settings
        from corea.service import CoreaService

        real = CoreaService(Settings(
            db_url=f"sqlite:///{tmp / 'embedded.sqlite'}",
            slm=ModelSettings(backend="llamacpp", model="embedded:slm", n_threads=args.threads),
            llm=ModelSettings(backend="llamacpp", model="embedded:llm", n_threads=args.threads)))
        out["overhead"].append(overhead(real, "embedded llama.cpp", prompts, 1,
                                        args.max_tokens))
    out["concurrency"] = concurrency(args.levels, args.requests, args.delay, args.words, tmp)
    out["machine"]["load_avg_at_end"] = os.getloadavg()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
