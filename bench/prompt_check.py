"""Compare SLM system prompts on GSM8K *train* items (prompts are tuned on train splits only).

    python bench/prompt_check.py --limit 12 --seed 1 --max-new-tokens 400

For each candidate system prompt, the embedded SLM (llama.cpp, greedy) answers the same random train
items through ``Cascade.slm_output`` (free parse, then forced suffix for what is missing). Reported
per prompt: pass@1, the share with a *free* (self-written) confidence, the share whose last
``\\boxed{}`` holds the confidence instead of the answer (a failure mode of small models), mean
completion tokens, and the distinct confidences.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corea import prompts  # noqa: E402
from corea.backends import make_backend  # noqa: E402
from corea.cascade import Cascade  # noqa: E402
from corea.config import ModelSettings, Settings  # noqa: E402
from corea.datasets import load_dataset  # noqa: E402
from corea.grading import grade  # noqa: E402
from corea.parsing import confidence_box  # noqa: E402

CANDIDATES = {
    "current": prompts.SLM_SYSTEM,
    "v0-initial": (
        "You are a careful problem solver. Think step by step, then give the final answer in "
        "\\boxed{}. After the answer, on a last line of its own, state how likely it is that your "
        "final answer is correct, as a probability between 0 and 1, written as "
        "\"Confidence: \" followed by that number."),
    "v1-only-answer-boxed": (
        "Solve the problem step by step. Put the final answer in \\boxed{}; only the "
        "answer goes in the box. Then write one last line that starts with \"Confidence:\" and "
        "gives the probability, from 0 to 1, that your answer is correct."),
    "v2-no-explanation": (
        "You are a careful problem solver. Reason step by step and finish with the final answer in "
        "\\boxed{}; only the answer goes in the box. After that, add a last line starting with "
        "\"Confidence:\" that gives your probability (a number between 0 and 1) that the boxed "
        "answer is correct. Do not explain or box the confidence."),
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--limit", type=int, default=12)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=400)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--only", nargs="*", default=None, help="candidate names to run")
    args = p.parse_args()
    items = load_dataset("gsm8k", split="train", limit=args.limit, seed=args.seed)
    ms = ModelSettings(model="embedded:slm", max_new_tokens=args.max_new_tokens,
                       n_threads=args.threads)
    settings = Settings(slm=ms, db_url="sqlite://")
    backend = make_backend(ms, settings.cache_dir)
    cascade = Cascade(backend, backend, settings)
    original = prompts.SLM_SYSTEM
    for name, system in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        prompts.SLM_SYSTEM = system
        n_ok = n_free = n_boxed_conf = tokens = 0
        confs = []
        for it in items:
            out = cascade.slm_output(it.question)
            n_ok += bool(grade(out.answer, it.answer).correct)
            n_free += out.confidence_method == "free"
            n_boxed_conf += confidence_box(out.text) is not None
            tokens += out.completion_tokens
            confs.append(out.confidence)
        n = len(items)
        print(json.dumps({"prompt": name, "n": n, "pass@1": round(n_ok / n, 3),
                          "free_confidence": round(n_free / n, 3),
                          "confidence_in_last_box": round(n_boxed_conf / n, 3),
                          "mean_completion_tokens": round(tokens / n, 1),
                          "confidences": sorted({c for c in confs if c is not None}),
                          "no_confidence": sum(c is None for c in confs)}), flush=True)
    prompts.SLM_SYSTEM = original
    return 0


if __name__ == "__main__":
    sys.exit(main())
