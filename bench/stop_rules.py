"""The stop rule (:mod:`corea.stopping`) measured offline on committed generations.

    python bench/stop_rules.py --runs data/generations/gsm8k-train-1000 \\
        data/generations/gsm8k-test-200 --out bench/results/stop_rules.json

Under greedy decoding a stop rule only truncates the same completion, so every committed row
says exactly what the rule would have changed. Per run folder and per variant of the rule
(``answer_and_confidence``: the rule the cascade uses, it waits for the answer and the stated
confidence; ``answer_only``: measured for comparison, not used — it waits for the answer only, as
it could with a calibration adapter that writes the confidence itself), this reports:

- SLM completion tokens per question before (the row's ``completion_tokens``) and after (minus
  the free solution's tokens after the cut, counted with the embedded SLM's own tokenizer,
  llama.cpp ``vocab_only``); how many rows the rule cuts;
- the rows whose parsed answer changes; for ``answer_and_confidence`` also the rows whose parsed answer or stated confidence changes, pass@1 before/after
  (a changed answer is graded again) and the stated-confidence deferral decisions at τ
  (``--tau``, default 0.7) before/after;
- for ``answer_only``: whether the text the adapter continues (:func:`corea.parsing.strip_confidence`)
  is unchanged — where it is not, the adapter's confidence may differ, which only a live run
  measures.

The free solution is the row's text without the forced ``Answer:`` / ``Confidence:``
continuations (their methods say which were forced). Token-probability signals (the shipped
calibrator's features: mean and minimum log-probability and the number of tokens) cannot be
recomputed exactly — the rows hold no per-token log-probabilities —, so the shipped calibrator's
deferral decisions are compared with only the token count changed
(``calibrated_deferrals_changed_at_tau_approx``). Counts only; nothing is timed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corea.config import Settings  # noqa: E402
from corea.eval.runs import load_results  # noqa: E402
from corea.grading import grade  # noqa: E402
from corea.parsing import (confidence_echoes_answer, extract_answer, parse_confidence,  # noqa: E402
                           strip_confidence)
from corea.prompts import ANSWER_SUFFIX, CONFIDENCE_SUFFIX  # noqa: E402
from corea.stopping import STOP_RULES, answered_at  # noqa: E402


def tokenizer():
    """``text -> token ids`` and ``ids -> text`` of the embedded SLM (llama.cpp, vocab only)."""
    import llama_cpp

    from corea.backends.weights import embedded_gguf

    llm = llama_cpp.Llama(str(embedded_gguf("slm", Settings().cache_dir)), vocab_only=True,
                          verbose=False)
    return (lambda t: llm.tokenize(t.encode("utf-8"), add_bos=False, special=False),
            lambda ids: llm.detokenize(ids).decode("utf-8", errors="replace"))


def free_text(slm: dict) -> str:
    """The row's free solution: its text without the forced continuations."""
    text = slm.get("text") or ""
    if slm.get("confidence_method") == "forced" and CONFIDENCE_SUFFIX in text:
        text = text[:text.rfind(CONFIDENCE_SUFFIX)]
    if slm.get("answer_method") == "forced" and ANSWER_SUFFIX in text:
        text = text[:text.rfind(ANSWER_SUFFIX)]
    return text


def tokens_after(text: str, cut: int, encode) -> int:
    """Tokens of ``text`` the rule saves: those after the token that holds its line end at
    ``cut`` (the engine generated that one before the line was known to be complete)."""
    return max(0, len(encode(text)) - len(encode(text[:cut + 1])))


CALIBRATOR_SLM = "Qwen2.5-Coder-0.5B-Instruct + COREA calibration adapter v4"
"""The SLM whose shipped calibrator decides by default (its folder under corea/assets)."""


def shipped_calibrator():
    """The default deciding calibrator (token features), or None when it does not ship."""
    from corea.signals.calibrator import load_plain
    from corea.shipped import asset_dir

    try:
        return load_plain(asset_dir("calibrators", CALIBRATOR_SLM))
    except (FileNotFoundError, ValueError):
        return None


def calibrated_flips(rows: list[dict], saved: list[int], cal, tau: float) -> int | None:
    """Deferral decisions of the shipped calibrator at ``tau`` that change when each row's
    ``n_tokens`` drops by its ``saved`` tokens — an approximation: the other token features
    (mean and minimum log-probability) also change a little, but the rows hold no per-token
    log-probabilities to recompute them. None without the calibrator."""
    if cal is None:
        return None
    flips = 0
    for r, k in zip(rows, saved):
        sig = dict(r["slm"].get("signals") or {})
        if not k or not sig:
            continue
        before = cal.predict_one({**r["slm"], "signals": sig})
        after = cal.predict_one({**r["slm"], "signals": {**sig, "n_tokens": max(
            0, int(sig.get("n_tokens") or 0) - k)}})
        flips += (before < tau) != (after < tau)
    return flips


def measure(rows: list[dict], encode, tau: float) -> dict:
    """Both variants of the rule on one run's rows (see the module docstring)."""
    rows = [r for r in rows if r.get("slm") and r.get("slm_correct") is not None]
    before = [int(r["slm"].get("completion_tokens") or 0) for r in rows]
    report = {"n": len(rows), "slm_tokens_mean_before": sum(before) / max(1, len(rows))}
    for variant, own in (("answer_and_confidence", True), ("answer_only", False)):
        after, changed, cut_rows, same_prefix = [], [], 0, 0
        correct_before = correct_after = defer_changed = answers_changed = 0
        for r, n in zip(rows, before):
            s, gold = r["slm"], r.get("gold")
            text = free_text(s)
            cut = answered_at(text, r.get("choices"), confidence=own)
            if s.get("finish_reason") == "length" or cut is None:
                after.append(n)
                correct_before += bool(r["slm_correct"])
                correct_after += bool(r["slm_correct"])
                same_prefix += cut is None
                continue
            cut_rows += 1
            after.append(n - tokens_after(text, cut, encode))
            stopped = text[:cut] + s["text"][len(text):]  # the forced parts follow as before
            a0, a1 = extract_answer(s["text"], r.get("choices")), extract_answer(
                stopped, r.get("choices"))
            c0, c1 = parse_confidence(s["text"]).value, parse_confidence(stopped).value
            ok1 = bool(r["slm_correct"]) if a1 == a0 else grade(a1, gold, r.get("choices")).correct
            correct_before += bool(r["slm_correct"])
            correct_after += ok1
            if a0 != a1:
                answers_changed += 1
            if own:
                k0 = None if confidence_echoes_answer(a0, c0) else c0
                k1 = None if confidence_echoes_answer(a1, c1) else c1
                defer_changed += (k0 is None or k0 < tau) != (k1 is None or k1 < tau)
                if (a0, c0) != (a1, c1):
                    changed.append({"id": r["id"], "answer": [a0, a1], "confidence": [c0, c1],
                                    "correct": [bool(r["slm_correct"]), ok1],
                                    "cut_off": text[cut:cut + 200]})
            else:
                same_prefix += strip_confidence(text[:cut]) == strip_confidence(text)
        v = {"rows_cut": cut_rows,
             "calibrated_deferrals_changed_at_tau_approx": calibrated_flips(
                 rows, [b - a for b, a in zip(before, after)], shipped_calibrator(), tau), "slm_tokens_mean_after": sum(after) / max(1, len(rows)),
             "tokens_saved": sum(before) - sum(after),
             "pass_at_1_before": correct_before / max(1, len(rows)),
             "pass_at_1_after": correct_after / max(1, len(rows)),
             "rows_answer_changed": answers_changed}
        if own:
            v.update(rows_answer_or_confidence_changed=len(changed),
                     stated_confidence_deferrals_changed_at_tau=defer_changed, changed=changed)
        else:
            v["rows_adapter_prefix_unchanged"] = same_prefix
        report[variant] = v
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="run folders (committed, packed)")
    ap.add_argument("--tau", type=float, default=0.7)
    ap.add_argument("--out", default=None, help="write the JSON report here")
    a = ap.parse_args(argv)
    encode, _ = tokenizer()
    report = {"rule": STOP_RULES, "tau": a.tau, "runs": {}}
    for run in a.runs:
        report["runs"][run] = measure(load_results(run), encode, a.tau)
    text = json.dumps(report, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
