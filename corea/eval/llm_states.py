"""The LLM's state after reading the question: a side file of a run folder, made by one prefill.

For each item of an existing run folder whose LLM has answered, the LLM prefills its own answer
prompt (:func:`corea.prompts.llm_messages`, chat template and generation prompt: the prefix it
decodes from when the question is deferred to it) and its final-layer hidden state after it is
read with :meth:`Backend.prompt_state` (:func:`corea.backends.llamacpp.read_prompt_state`, the
reader of pre-generation routing; nothing is generated). One line per item is appended to
``<run_dir>/llm_states.jsonl``::

    {"id": ..., "model": "Qwen2.5-Coder-1.5B-Instruct",
     "states": {"prompt": "<base64 float16, 1536 floats>"},
     "prompt_tokens": 60, "seconds": 1.9, "error": null}

``prompt_tokens`` must equal the row's LLM ``prompt_tokens`` (the same prompt the LLM answered
from); a row whose count differs is still written but counted as a mismatch (the prompts
changed since the run). ``seconds``: wall time of the prefill on this machine (shared CPU: a
record, not a timing). Resumable like every side file (:func:`corea.eval.harness.score_each`):
an item with a line is skipped, a torn last line is dropped. :func:`corea.eval.runs.load_results`
puts the state on the row's LLM record (``llm.states.prompt``), where the prompt-position probes
read it (:func:`corea.signals.probe.state_matrix` with ``tier="llm"``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..datasets import Item
from ..prompts import llm_messages
from ..signals import hidden
from .harness import score_each
from .runs import LLM_STATES_FILE, load_results, read_items

__all__ = ["LLM_STATES_FILE", "StatesReport", "llm_state_line", "score_llm_states",
           "items_with_llm"]


@dataclass(frozen=True)
class StatesReport:
    """What a :func:`score_llm_states` session did: items read now, lines in the file, lines
    whose prompt size differs from the row's LLM prompt (``mismatched``), failed reads."""

    scored: int
    total: int
    mismatched: int
    failed: int


def items_with_llm(rows: Sequence[dict], limit: int | None = None) -> list[Item]:
    """The items (id, question, choices) of ``rows`` whose LLM has a decided grade, in row order,
    the first ``limit`` of them when given."""
    out = [Item(str(r["id"]), r.get("question") or "", str(r.get("gold") or ""),
                tuple(r["choices"]) if r.get("choices") else None, r.get("dataset") or "")
           for r in rows if r.get("llm_correct") is not None and r.get("llm")]
    return out[:limit] if limit is not None else out


def llm_state_line(item: Item, backend) -> dict:
    """One ``llm_states.jsonl`` line: ``backend``'s state after ``item``'s LLM prompt. A failed
    read is a line with ``error`` (``kind: message``) and no state; never raises."""
    msgs = llm_messages(item.question, list(item.choices) if item.choices else None)
    t0 = time.perf_counter()
    line: dict = {"id": item.id, "model": backend.model_name, "states": None,
                  "prompt_tokens": None, "seconds": None, "error": None}
    try:
        got = backend.prompt_state(msgs)
        line["states"] = {"prompt": hidden.encode(got.state)}
        line["prompt_tokens"] = int(got.prompt_tokens)
    except Exception as exc:  # noqa: BLE001 — one bad item must not stop the folder
        line["error"] = f"{getattr(exc, 'kind', type(exc).__name__)}: {exc}"
    line["seconds"] = round(time.perf_counter() - t0, 4)
    return line


def score_llm_states(run_dir: str | os.PathLike, backend, limit: int | None = None,
                     progress: bool = True) -> StatesReport:
    """Read the LLM's prompt state for every item of ``run_dir`` with an LLM grade (the first
    ``limit``) that has no line yet in ``llm_states.jsonl``; one item at a time.

    Raises:
        FileNotFoundError: no run at ``run_dir``.
        ValueError: the backend is not the run's LLM.
        RuntimeError: another process is writing the folder.
    """
    run_dir = Path(run_dir)
    rows = load_results(run_dir)
    names = {(r.get("llm") or {}).get("model") for r in rows if r.get("llm")} - {None}
    if names and backend.model_name not in names:
        raise ValueError(f"{run_dir}'s LLM is {sorted(names)}, not {backend.model_name}")
    items = items_with_llm(rows, limit)
    scored = score_each(items, lambda it: llm_state_line(it, backend), run_dir, LLM_STATES_FILE,
                        workers=1, progress=progress)
    by_id = {str(r["id"]): r for r in rows}
    lines = list(read_items(run_dir / LLM_STATES_FILE, repair=False))
    mismatched = sum(1 for ln in lines if ln.get("prompt_tokens") is not None and
                     ln["prompt_tokens"] != ((by_id.get(str(ln["id"])) or {}).get("llm") or {})
                     .get("prompt_tokens"))
    failed = sum(1 for ln in lines if ln.get("error"))
    return StatesReport(scored, len(lines), mismatched, failed)
