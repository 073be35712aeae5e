"""What the supervised worker process costs: the embedded SLM's time to first token and decode
speed in-process against the same model behind :class:`corea.backends.worker.WorkerBackend`
(``isolate``), same prompts, alternated.

    python bench/worker_overhead.py --repeats 6 --json bench/results/worker_overhead.json

Both engines are loaded first (the worker's load, in its child, is timed separately as
``worker_start_s``), then each repeat asks question ``r`` of both, in-process first on even
repeats and the worker first on odd ones, so drift in the machine's load falls on both. Each
engine sees each question once (llama.cpp's prefix cache holds only the shared system prompt,
as in real use). Measured as in ``bench/speed.py``: ``ttft_s`` from the call to the first
streamed text; ``decode_tok_s`` = (completion tokens − 1) / (last − first text time). Reported:
medians, ``ttft_added_s`` (worker − in-process) and ``decode_slowdown`` = 1 − worker/in-process
decode speed (target ≤ 0.03). Greedy decoding, ``--threads`` threads per engine (default 1).

Timings only mean something on an otherwise idle machine; the report records the load average.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import QUESTIONS, bare_run  # noqa: E402

from corea.backends import make_backend  # noqa: E402
from corea.config import EMBEDDED_SLM, ModelSettings, Settings  # noqa: E402


def med(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r[key] is not None]
    return round(statistics.median(vals), 4) if vals else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=6, help=f"at most {len(QUESTIONS)}")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    cache_dir = Settings().cache_dir
    load_before = [round(x, 2) for x in os.getloadavg()]
    ms = ModelSettings(backend="llamacpp", model=EMBEDDED_SLM,
                       max_new_tokens=args.max_new_tokens, n_threads=args.threads)
    short = ModelSettings(backend="llamacpp", model=EMBEDDED_SLM, max_new_tokens=1,
                          n_threads=args.threads)
    inproc = make_backend(ms, cache_dir)
    worker = make_backend(ms.model_copy(update={"isolate": True}), cache_dir)
    bare_run(inproc, short, QUESTIONS[-1])  # loads the model
    t = time.perf_counter()
    bare_run(worker, short, QUESTIONS[-1])  # starts the child, which loads it
    worker_start_s = round(time.perf_counter() - t, 2)
    rows: dict[str, list[dict]] = {"in_process": [], "worker": []}
    try:
        for r in range(min(args.repeats, len(QUESTIONS) - 1)):
            order = ["in_process", "worker"] if r % 2 == 0 else ["worker", "in_process"]
            for name in order:
                backend = inproc if name == "in_process" else worker
                rows[name].append(bare_run(backend, ms, QUESTIONS[r]))
    finally:
        worker.close()
    fig = {k: {"ttft_s": med(v, "ttft_s"), "decode_tok_s": med(v, "decode_tok_s"),
               "tokens": [x["tokens"] for x in v]} for k, v in rows.items()}
    ip, wk = fig["in_process"], fig["worker"]
    out = {"model": ms.name, "threads": args.threads, "max_new_tokens": args.max_new_tokens,
           "repeats": len(rows["worker"]), "worker_start_s": worker_start_s, **fig,
           "ttft_added_s": round(wk["ttft_s"] - ip["ttft_s"], 4),
           "decode_slowdown": round(1 - wk["decode_tok_s"] / ip["decode_tok_s"], 4),
           "runs": rows, "loadavg_before": load_before,
           "loadavg_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
           "machine": platform.processor() or platform.machine(),
           "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
