"""Speculative decoding of the deferred LLM answer with the SLM's solution as the draft source:
the real speed-up on this machine, and a check that the answer does not change.

    python bench/speculative.py --limit 30 --json bench/results/speculative.json
    python bench/speculative.py --limit 2 --max-new-tokens 48 --threads 1   # a quick smoke run
    python bench/speculative.py --replay --limit 200   # pass counts only: no model run, no timing

MEASURE ONLY ON AN OTHERWISE IDLE MACHINE: every number is wall-clock time, and llama.cpp's
threads spin-wait, so any other CPU load distorts it (the script records the load average before
and after and warns when the machine is busy).

For the first ``--limit`` items (id order) of a committed evaluation run (default
``data/generations/gsm8k-test-200``, read with :func:`corea.eval.runs.load_results`; each row
holds the SLM's solution), the embedded LLM answers the question with the cascade's LLM prompt
(:func:`corea.prompts.llm_messages`), greedy, three ways, one after the other per item:

- ``off``: the llama.cpp backend as shipped (``speculative: off``);
- ``plain``: ``speculative: slm_lookup`` without a hint: the same model with flash attention
  (which drafting needs for exactness), one token per forward pass;
- ``hint``: ``speculative: slm_lookup`` with the SLM's solution as ``draft_hint``.

Per arm: completion tokens, seconds (request to last token, prompt included), decode tokens/s
(tokens after the first / time after the first), forward passes per token (from
``LlamaCppBackend.last_draft``; 1.0 without drafting) and drafted/accepted tokens. ``identical``:
the ``hint`` answer equals the ``plain`` one (text, token count, finish reason); it must always
hold. ``off_equal`` says whether flash attention alone changed the answer, and ``correct``
(graded against the gold answer, :func:`corea.grading.grade`) whether that moved pass@1. The
summary adds the speed-ups ``hint`` vs ``plain`` and vs ``off`` (ratio of summed decode tokens/s
and of summed seconds).

``--replay`` runs no model: it replays the drafter against the LLM answers committed in the run
(:func:`corea.backends.drafting.replay`, tokenized with the LLM's tokenizer) and reports forward
passes per token exactly for those answers (they were decoded in batched mode, so a fresh
single-sequence answer may differ a little). It needs no idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corea.backends.drafting import DraftStats, HintDrafter, replay  # noqa: E402
from corea.backends.llamacpp import LlamaCppBackend  # noqa: E402
from corea.config import EMBEDDED_LLM, ModelSettings, Settings  # noqa: E402
from corea.eval.runs import load_results, machine_info  # noqa: E402
from corea.grading import grade  # noqa: E402
from corea.parsing import extract_answer  # noqa: E402
from corea.prompts import llm_messages  # noqa: E402
from corea.types import GenerationParams  # noqa: E402

IDLE_NOTE = ("wall-clock timings: meaningful only on an otherwise idle machine (llama.cpp's "
             "threads spin-wait; other load distorts every number)")


def timed(backend: LlamaCppBackend, messages, params: GenerationParams) -> dict:
    """One streamed answer: text, tokens, finish reason, seconds, decode tokens/s, draft counts."""
    backend.last_draft = None
    t0 = time.perf_counter()
    first = last = None
    parts, usage, finish, n_lp = [], None, None, 0
    for ch in backend.stream_chat(messages, params):
        now = time.perf_counter()
        n_lp += len(ch.logprobs)
        if ch.logprobs:
            first = first or now
            last = now
        parts.append(ch.text)
        usage = ch.usage or usage
        finish = ch.finish_reason or finish
    end = time.perf_counter()
    n = usage.completion_tokens if usage else 0
    draft = backend.last_draft
    # tokens after the first / the time after the first arrived: the decode rate
    decode = (n_lp - 1) / (last - first) if first and last and last > first else None
    return {"text": "".join(parts), "tokens": n, "finish": finish, "seconds": round(end - t0, 4),
            "decode_tok_s": round(decode, 3) if decode else None,
            "passes_per_token": round(draft.passes / draft.tokens, 4) if draft and draft.tokens
            else 1.0,
            "draft": draft.as_dict() if draft else None,
            "_decode_span": (n_lp - 1, (last - first) if first and last else 0.0)}


def summarize(items: list[dict], arms: list[str]) -> dict:
    out: dict = {"items": len(items)}
    for arm in arms:
        rows = [it[arm] for it in items]
        n, span = (sum(r["_decode_span"][i] for r in rows) for i in (0, 1))
        out[arm] = {"correct": sum(bool(r["correct"]) for r in rows),
                    "tokens": sum(r["tokens"] for r in rows),
                    "seconds": round(sum(r["seconds"] for r in rows), 3),
                    "decode_tok_s": round(n / span, 3) if span else None}
        drafts = [r["draft"] for r in rows if r["draft"]]
        if drafts:
            t, p = sum(d["tokens"] for d in drafts), sum(d["passes"] for d in drafts)
            dr, ac = sum(d["drafted"] for d in drafts), sum(d["accepted"] for d in drafts)
            out[arm].update(passes_per_token=round(p / t, 4), drafted=dr, accepted=ac,
                            acceptance=round(ac / dr, 4) if dr else 0.0)
    if "hint" in arms:
        for base in ("plain", "off"):
            if base in arms and out[base]["decode_tok_s"] and out["hint"]["decode_tok_s"]:
                out[f"decode_speedup_vs_{base}"] = round(
                    out["hint"]["decode_tok_s"] / out[base]["decode_tok_s"], 4)
                out[f"time_fraction_of_{base}"] = round(
                    out["hint"]["seconds"] / out[base]["seconds"], 4)
        if "plain" in arms:
            out["identical"] = sum(it["identical"] for it in items)
    if "off" in arms and "plain" in arms:
        out["off_equal"] = sum(it["off_equal"] for it in items)
    return out


def replayed(rows: list[dict], backend: LlamaCppBackend, draft_tokens: int,
             min_match: int) -> dict:
    """Pass counts of drafting against the committed LLM answers of ``rows`` (no decoding)."""
    model = backend.load()

    def tokens(text: str, special: bool = False) -> list[int]:
        return model.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    total = DraftStats()
    for r in rows:
        answer = (r.get("llm") or {}).get("text")
        if not answer:
            continue
        prompt = tokens(backend.render_prompt(llm_messages(r["question"], r.get("choices"))),
                        special=True)
        drafter = HintDrafter(tokens(r["slm"]["text"]), max_tokens=draft_tokens,
                              min_match=min_match, max_match=max(min_match, 8))
        s = replay(drafter, prompt, tokens(answer) + [model.llm.token_eos()])
        for f in ("tokens", "passes", "drafted", "accepted"):
            setattr(total, f, getattr(total, f) + getattr(s, f))
    return {"replayed_answers": sum(bool((r.get("llm") or {}).get("text")) for r in rows),
            **total.as_dict(), "passes_per_token": round(total.passes / total.tokens, 4)
            if total.tokens else None}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="data/generations/gsm8k-test-200",
                    help="committed run folder whose rows hold the SLM's solutions")
    ap.add_argument("--limit", type=int, default=30, help="first N items (id order)")
    ap.add_argument("--max-new-tokens", type=int, default=512, help="the LLM's budget (tokens)")
    ap.add_argument("--threads", type=int, default=None,
                    help="llama.cpp threads (default: all usable cores)")
    ap.add_argument("--draft-tokens", type=int, default=ModelSettings().draft_tokens)
    ap.add_argument("--min-match", type=int, default=ModelSettings().draft_min_match)
    ap.add_argument("--arms", nargs="+", default=["off", "plain", "hint"],
                    choices=["off", "plain", "hint"])
    ap.add_argument("--replay", action="store_true",
                    help="only count passes against the committed LLM answers (no timing)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    if args.limit < 1 or args.max_new_tokens < 1:
        ap.error("--limit and --max-new-tokens must be positive")
    return args


def run_item(r: dict, backends: dict, arms: list[str], params: GenerationParams) -> dict:
    """Every arm's answer to row ``r``, graded, and whether the answers agree."""
    msgs = llm_messages(r["question"], r.get("choices"))
    item = {"id": r["id"]}
    for arm in arms:
        p = dataclasses.replace(params, draft_hint=r["slm"]["text"]) if arm == "hint" else params
        item[arm] = timed(backends[arm], msgs, p)
        item[arm]["correct"] = grade(extract_answer(item[arm]["text"], r.get("choices")),
                                     r["gold"], r.get("choices")).correct

    def same(a: str, b: str) -> bool:
        return all(item[a][k] == item[b][k] for k in ("text", "tokens", "finish"))

    if "hint" in item and "plain" in item:
        item["identical"] = same("hint", "plain")
    if "off" in item and "plain" in item:
        item["off_equal"] = same("off", "plain")
    return item


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = [r for r in load_results(args.run_dir)
            if (r.get("slm") or {}).get("text")][:args.limit]
    if not rows:
        print(f"no rows with the SLM's text in {args.run_dir}", file=sys.stderr)
        return 2
    cache = Settings().cache_dir
    common = dict(backend="llamacpp", model=EMBEDDED_LLM, n_threads=args.threads,
                  draft_tokens=args.draft_tokens, draft_min_match=args.min_match)
    if args.replay:
        backend = LlamaCppBackend(ModelSettings(**common, speculative="slm_lookup"), cache)
        print(json.dumps(replayed(rows, backend, args.draft_tokens, args.min_match), indent=1))
        return 0
    load_before = os.getloadavg()
    usable = machine_info()["cpu_usable"] or 1
    print(f"NOTE: {IDLE_NOTE}. Load average now {load_before[0]:.2f} on {usable} CPUs.",
          file=sys.stderr)
    if load_before[0] > 0.5:
        print("WARNING: the machine is not idle; these timings are not a measurement.",
              file=sys.stderr)

    backends = {"off": LlamaCppBackend(ModelSettings(**common, speculative="off"), cache),
                "plain": LlamaCppBackend(ModelSettings(**common, speculative="slm_lookup"), cache)}
    backends["hint"] = backends["plain"]
    for arm in {a if a != "hint" else "plain" for a in args.arms}:
        backends[arm].load()  # load time is not part of any answer's seconds
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    items = []
    for r in rows:
        items.append(item := run_item(r, backends, args.arms, params))
        print(json.dumps({"id": item["id"], **{a: {k: item[a][k] for k in (
            "tokens", "seconds", "decode_tok_s", "passes_per_token")} for a in args.arms},
            "identical": item.get("identical")}), file=sys.stderr)

    summary = summarize(items, args.arms)
    for it in items:
        for arm in args.arms:
            it[arm].pop("_decode_span")
            it[arm].pop("text")
    import llama_cpp

    result = {"note": IDLE_NOTE, "llama_cpp_python": llama_cpp.__version__,
              "machine": {k: v for k, v in machine_info().items() if k != "hostname"},
              "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
              "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "summary": summary, "items": items}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if "identical" in summary and summary["identical"] != len(items):
        print(f"ERROR: {len(items) - summary['identical']} drafted answers differ from the "
              f"undrafted ones", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
