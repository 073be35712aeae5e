"""Fit a per-token time model (:mod:`corea.timing`) on this machine, or from evaluation runs.

    # time the embedded pair (one question at a time; run it on an otherwise idle machine)
    COREA_SLM__N_THREADS=2 COREA_LLM__N_THREADS=2 python bench/time_model.py \\
        --out bench/results/time_model.json
    # the same from the measured calls of run folders (rows' latency_s and token counts)
    python bench/time_model.py --from-runs data/generations/gsm8k-train-1000 --out tm.json
    # from a committed bench/speed.py result (this is how the shipped estimate was made)
    python bench/time_model.py --from-speed bench/results/speed-llamacpp.json \\
        --out corea/assets/timing/time_model.json
    # the plumbing on the scripted fake backend (no model; seconds are the fake's delays)
    python bench/time_model.py --backend fake --out /tmp/tm.json

Timing: each model answers each prompt of :data:`bench.speed.QUESTIONS` (different lengths)
at each ``--max-new-tokens`` budget (different completion lengths), greedy, streamed; a call's
seconds are from the request to its last chunk. The fit is non-negative least squares of seconds on
``[1, prompt tokens, completion tokens]`` per model (:func:`corea.timing.fit_time_model`). The JSON
records the machine (:func:`corea.eval.runs.machine_info`), the source and each model's number of
calls. One warm-up call per model is not counted (model load).

Rows from runs decoded with many workers at once measure a shared CPU, not a model's own speed:
check the run's ``sessions[].workers`` before trusting such a fit (see
``corea/assets/timing/README.md``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corea.timing import (TimedCall, TimeModel, TokenTime, calls_from_rows,  # noqa: E402
                          fit_time_model)

DEFAULT_BUDGETS = (16, 64, 160)


def time_call(backend, messages, params) -> TimedCall:
    """One streamed call: its token counts (from the final chunk's usage) and wall seconds."""
    t0 = time.perf_counter()
    usage = None
    for ch in backend.stream_chat(messages, params):
        if ch.usage is not None:
            usage = ch.usage
    dt = time.perf_counter() - t0
    return TimedCall(getattr(backend, "model_name", "") or "", usage.prompt_tokens if usage else 0,
                     usage.completion_tokens if usage else 0, dt)


def measure(backend, name: str, settings, questions: Sequence[str],
            budgets: Sequence[int] = DEFAULT_BUDGETS) -> list[TimedCall]:
    """Time ``backend`` on every question at every completion budget (after one warm-up call).

    ``settings``: the model's :class:`corea.config.ModelSettings` (generation parameters);
    ``name``: the model name the calls are recorded under.
    """
    from corea.prompts import slm_messages

    time_call(backend, slm_messages(questions[0]),
              settings.model_copy(update={"max_new_tokens": 1}).generation_params())
    out = []
    for budget in budgets:
        params = settings.model_copy(update={"max_new_tokens": budget}).generation_params()
        for q in questions:
            c = time_call(backend, slm_messages(q), params)
            out.append(TimedCall(name, c.prompt_tokens, c.completion_tokens, c.latency_s))
    return out


def _fake_backend(name: str):
    """A scripted backend whose replies grow with the prompt and that sleeps per chunk."""
    from corea.backends.fake import FakeBackend

    return FakeBackend(lambda msgs: " ".join(["step"] * (20 + len(msgs[-1].content) // 4))
                       + " \\boxed{1}\nConfidence: 0.5", model_name=name, chunk_chars=8,
                       delay_s=0.0005)


def _timed(args) -> list[TimedCall]:
    """Time each chosen model of the embedded pair (or of the fake backend)."""
    from speed import QUESTIONS  # bench/speed.py: distinct GSM8K-length questions

    from corea.backends import make_backend
    from corea.config import Settings

    settings = Settings(db_url="sqlite://")
    calls = []
    for which in args.models:
        ms = getattr(settings, which)
        backend = _fake_backend(ms.name) if args.backend == "fake" \
            else make_backend(ms, Path(settings.cache_dir))
        calls += measure(backend, ms.name, ms, QUESTIONS, args.max_new_tokens)
    return calls


def from_speed_bench(result: dict, source: str) -> TimeModel:
    """A time model from a ``bench/speed.py --json`` result (llama.cpp rows): per model, the
    median time to first token of a GSM8K-length question (system prompt from the prefix cache)
    as the per-call overhead, 1 / decode tokens/s per completion token, and no separate prompt
    term (the question's prefill is inside the overhead).

    Raises:
        ValueError: a row without ``ttft_s`` or ``decode_tok_s``.
    """
    models = {}
    for row in result.get("results", []):
        if not row.get("ttft_s") or not row.get("decode_tok_s"):
            raise ValueError(f"{row.get('model')}: no ttft_s / decode_tok_s to build a time model")
        models[row["model"]] = TokenTime(overhead_s=float(row["ttft_s"]),
                                         completion_s_per_token=1.0 / float(row["decode_tok_s"]),
                                         n_calls=int((result.get("args") or {}).get("repeats", 0)))
    return TimeModel(models=models, machine=dict(result.get("machine") or {}), source=source)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="time model JSON to write")
    ap.add_argument("--from-runs", nargs="+", metavar="RUN_DIR",
                    help="fit from these run folders' measured calls instead of timing models")
    ap.add_argument("--from-speed", metavar="SPEED_JSON",
                    help="build from a bench/speed.py --json result (ttft, decode tokens/s)")
    ap.add_argument("--backend", choices=("embedded", "fake"), default="embedded")
    ap.add_argument("--models", nargs="+", choices=("slm", "llm"), default=["slm", "llm"])
    ap.add_argument("--max-new-tokens", nargs="+", type=int, default=list(DEFAULT_BUDGETS))
    args = ap.parse_args(argv)
    from corea.eval.runs import load_results, machine_info, read_run

    if args.from_speed:
        import json

        tm = from_speed_bench(json.loads(Path(args.from_speed).read_text(encoding="utf-8")),
                              f"from {args.from_speed} (bench/speed.py: one question at a time, "
                              "idle machine): overhead = median time to first token, "
                              "1 / decode tokens/s per completion token")
    elif args.from_runs:
        calls, machines = [], []
        for d in args.from_runs:
            calls += calls_from_rows(load_results(d))
            run = read_run(d) or {}
            machines.append({"run": str(d), "machine": run.get("machine"),
                             "workers": sorted({s.get("workers") for s in run.get("sessions", [])
                                                if s.get("workers") is not None})})
        tm = fit_time_model(calls, {"runs": machines},
                            "least squares over the runs' measured calls (latency_s)")
    else:
        tm = fit_time_model(_timed(args), machine_info(),
                            f"timed by bench/time_model.py ({args.backend} backend, one question "
                            f"at a time, budgets {args.max_new_tokens} new tokens)")
    tm.save(args.out)
    for name, t in tm.models.items():
        print(f"{name}: {t.overhead_s:.3f} s + {t.prompt_s_per_token * 1e3:.2f} ms/prompt token "
              f"+ {t.completion_s_per_token * 1e3:.2f} ms/completion token ({t.n_calls} calls)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
