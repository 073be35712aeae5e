"""The LLM's P(True) on the SLM's answer: a side file of a run folder, one LLM prefill per item.

For each item of an existing run folder whose SLM gave an answer and whose LLM has a grade, the
run's LLM reads the question and the SLM's final answer (``context: answer``, default) or its
whole solution (``context: solution``; :func:`corea.prompts.llm_verify_messages`) and its
probability of "Yes" against "No" as the next token is read
(:meth:`Backend.next_token_logprobs`; nothing is generated). One line per item is appended to
``<run_dir>/llm_verify.jsonl``::

    {"id": ..., "model": "Qwen2.5-Coder-1.5B-Instruct", "context": "answer",
     "prompt_version": "llm-verify-1", "p_true": 0.83, "logprobs": {"Yes": -0.2, "No": -1.8},
     "prompt_tokens": 96, "seconds": 0.9, "error": null}

``p_true`` = P("Yes") / (P("Yes") + P("No")) in [0, 1] (Kadavath et al., 2022; the LLM judging
the SLM, not itself: AutoMix's self-verification is the SLM's own, ``slm_verify``). It is a
signal that the SLM is right (``llm_p_true``, :mod:`corea.signals.registry`), and it costs one
LLM call with no completion: ``prompt_tokens`` at the LLM's input price and, in seconds, the
time model's LLM call (charged on every item by the reports: the verify prompt is not the LLM's
answer prompt, so a deferred question pays its answer on top; with ``context: answer`` the two
share the system prompt and the question, which llama.cpp's prefix cache may reuse — not counted).
``seconds``: the wall time of the call on this machine (a record, not a timing).

Resumable like every side file (:func:`corea.eval.harness.score_each`); one context per file (a
second context is refused: the lines would mix two signals). :func:`corea.eval.runs.load_results`
puts each line on its row as ``llm_verify``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..datasets import Item
from ..prompts import LLM_VERIFY_CONTEXTS, LLM_VERIFY_VERSION, llm_verify_messages
from ..types import Message
from .harness import score_each
from .runs import LLM_VERIFY_FILE, load_results, read_items

__all__ = ["LLM_VERIFY_FILE", "VerifyReport", "verify_messages_of", "llm_verify_line",
           "score_llm_verify"]

CANDIDATES = ("Yes", "No")


@dataclass(frozen=True)
class VerifyReport:
    """What a :func:`score_llm_verify` session did: items read now, lines in the file, failed
    reads."""

    scored: int
    total: int
    failed: int


def verify_messages_of(row: dict, context: str) -> list[Message]:
    """The LLM's verify prompt for an evaluation row (its question, choices and the SLM's answer,
    and with ``context="solution"`` the SLM's solution text: its program in ``pot``).

    Raises:
        ValueError: an unknown ``context`` or a row without an SLM answer.
    """
    if context not in LLM_VERIFY_CONTEXTS:
        raise ValueError(f"context must be one of {LLM_VERIFY_CONTEXTS}, not {context!r}")
    slm = row.get("slm") or {}
    if not slm.get("answer"):
        raise ValueError(f"item {row.get('id')}: the SLM gave no answer")
    solution = (slm.get("program") or slm.get("text") or "") if context == "solution" else None
    return llm_verify_messages(row.get("question") or "", row.get("choices") or None,
                               str(slm["answer"]), solution)


def llm_verify_line(row: dict, backend, context: str = "answer") -> dict:
    """One ``llm_verify.jsonl`` line for ``row`` read by ``backend`` (the LLM). A failed read is
    a line with ``error`` (``kind: message``) and no ``p_true``; never raises."""
    t0 = time.perf_counter()
    line: dict = {"id": str(row["id"]), "model": backend.model_name, "context": context,
                  "prompt_version": LLM_VERIFY_VERSION, "p_true": None, "logprobs": None,
                  "prompt_tokens": None, "seconds": None, "error": None}
    try:
        msgs = verify_messages_of(row, context)
        lps = backend.next_token_logprobs(msgs, "", CANDIDATES)
        yes, no = (math.exp(lps[c]) for c in CANDIDATES)
        line["logprobs"] = {c: float(lps[c]) for c in CANDIDATES}
        line["p_true"] = yes / (yes + no) if yes + no > 0 else None
        count = getattr(backend, "count_prompt_tokens", None)
        line["prompt_tokens"] = int(count(msgs)) if count else None
    except Exception as exc:  # noqa: BLE001 — one bad item must not stop the folder
        line["error"] = f"{getattr(exc, 'kind', type(exc).__name__)}: {exc}"
    line["seconds"] = round(time.perf_counter() - t0, 4)
    return line


def _rows_to_read(rows: Sequence[dict], limit: int | None) -> list[dict]:
    out = [r for r in rows if r.get("llm_correct") is not None and r.get("llm")
           and (r.get("slm") or {}).get("answer")]
    return out[:limit] if limit is not None else out


def score_llm_verify(run_dir: str | os.PathLike, backend, limit: int | None = None,
                     context: str = "answer", progress: bool = True) -> VerifyReport:
    """Read the LLM's P(True) on the SLM's answer for every item of ``run_dir`` with an SLM
    answer and an LLM grade (the first ``limit``) that has no line yet in ``llm_verify.jsonl``;
    one item at a time.

    Raises:
        FileNotFoundError: no run at ``run_dir``.
        ValueError: the backend is not the run's LLM, an unknown ``context``, or the file holds
            lines of another context.
        RuntimeError: another process is writing the folder.
    """
    if context not in LLM_VERIFY_CONTEXTS:
        raise ValueError(f"--context must be one of {', '.join(LLM_VERIFY_CONTEXTS)}, "
                         f"not {context!r}")
    run_dir = Path(run_dir)
    rows = load_results(run_dir)
    names = {(r.get("llm") or {}).get("model") for r in rows if r.get("llm")} - {None}
    if names and backend.model_name not in names:
        raise ValueError(f"{run_dir}'s LLM is {sorted(names)}, not {backend.model_name}")
    other = {ln.get("context") for ln in read_items(run_dir / LLM_VERIFY_FILE, repair=False)} \
        - {context}
    if other:
        raise ValueError(f"{run_dir / LLM_VERIFY_FILE} holds lines with context "
                         f"{sorted(map(str, other))}; move it away to read with {context!r}")
    todo = _rows_to_read(rows, limit)
    by_id = {str(r["id"]): r for r in todo}
    items = [Item(i, "", "", None, "") for i in by_id]
    scored = score_each(items, lambda it: llm_verify_line(by_id[it.id], backend, context),
                        run_dir, LLM_VERIFY_FILE, workers=1, progress=progress)
    lines = list(read_items(run_dir / LLM_VERIFY_FILE, repair=False))
    return VerifyReport(scored, len(lines), sum(1 for ln in lines if ln.get("error")))
