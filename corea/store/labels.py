"""From a rating to correctness labels: the one rule, used by the threshold explorer, the
calibrator (:mod:`corea.eval.calibrate`) and training on rated exports (:mod:`train.grpo`).

The gold answer of a rated interaction (:func:`gold_answer`):

1. a non-blank **correction** is the gold answer (it wins over the thumbs);
2. otherwise **👍** makes the shown final answer the gold answer;
3. anything else gives no gold answer.

Labels of one interaction (:func:`label_interaction`):

* with a gold answer, each model that answered is graded against it: ``slm_correct`` from the
  SLM's answer; ``llm_correct`` from the LLM's answer if the LLM ran without error, else None (a
  question the SLM kept never reached the LLM, so its LLM label is unknown);
* **👎** without a correction only says the final answer is wrong: the model that gave it gets
  False, and the other model too if its answer matches the final one; otherwise unknown;
* a rating with only a comment gives no label.

"Matches" means equal after trimming/case-folding, or judged equal by :func:`corea.grading.grade`
(math equivalence); an empty answer is wrong; an undecidable comparison is unknown (None). Rated
interactions therefore mostly give SLM labels; cascade metrics use the deferred ones that have
both.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["gold_answer", "label_interaction", "rows_from_interactions"]


def gold_answer(correction: Any, thumbs: str | None, final_answer: Any
                ) -> tuple[str | None, str | None]:
    """``(gold answer, basis)`` of a rating: the correction (basis ``"correction"``), else the
    final answer of a 👍 (``"thumbs up"``), else ``(None, None)``."""
    if correction is not None and str(correction).strip():
        return str(correction).strip(), "correction"
    if thumbs == "up" and final_answer is not None and str(final_answer).strip():
        return str(final_answer).strip(), "thumbs up"
    return None, None


def _norm(s: Any) -> str:
    return " ".join(str(s).strip().casefold().split()).rstrip(".")


def _matches(pred: Any, gold: Any) -> bool | None:
    """True/False/None (undecided) for "``pred`` is the answer ``gold``" (see module docstring)."""
    if pred is None or not str(pred).strip():
        return False
    if _norm(pred) == _norm(gold):
        return True
    try:
        from ..grading import grade

        return grade(str(pred), str(gold)).correct
    except Exception:  # noqa: BLE001 - a grader fault leaves the label unknown
        log.exception("grading a rated interaction failed")
        return None


def _llm_ok(row: dict) -> bool:
    """The LLM ran on this interaction and did not fail."""
    if row.get("llm_model") is None:
        return False
    return not any(str(e).startswith("llm error") for e in (row.get("errors") or []))


def label_interaction(row: dict) -> dict:
    """A flat row (labels, costs, ``label_basis``) for one logged interaction with its rating
    (a :meth:`corea.store.Store.list_interactions` dict); rules in the module docstring."""
    extra = row.get("extra") or {}
    llm_ok = _llm_ok(row)
    thumbs = row.get("rating_thumbs")
    final = row.get("final_answer")
    slm_c: bool | None = None
    llm_c: bool | None = None
    gold, basis = gold_answer(row.get("rating_correction"), thumbs, final)
    if gold is not None:
        slm_c = _matches(row.get("slm_answer"), gold)
        llm_c = _matches(row.get("llm_answer"), gold) if llm_ok else None
    elif thumbs == "down":
        basis = "thumbs down"
        if llm_ok:
            llm_c = False
            slm_c = False if (final is not None and _matches(row.get("slm_answer"), final)) \
                else None
        elif final is not None:
            slm_c = False
    slm_cost = extra.get("slm_cost_usd")
    if slm_cost is None:
        slm_cost = 0.0 if row.get("llm_model") else (row.get("cost_usd") or 0.0)
    return {"id": row.get("id"), "confidence": row.get("confidence"),
            "slm_correct": slm_c, "llm_correct": llm_c,
            "slm_cost": float(slm_cost or 0.0),
            "llm_cost": float(extra.get("llm_cost_usd") or 0.0),
            "label_basis": basis if (slm_c is not None or llm_c is not None) else None}


def rows_from_interactions(store, limit: int | None = None,
                           memo: dict | None = None,
                           session_id: str | None = None) -> list[dict]:
    """Flat rows of the rated interactions in ``store`` (newest first), labelled by
    :func:`label_interaction`. Unlabelled ones are kept with None labels.

    Args:
        store: a :class:`corea.store.Store`.
        limit: at most this many rated interactions (None: all).
        memo: optional dict reused between calls to skip re-grading unchanged ratings.
        session_id: only this session's rated interactions (None: every session's).
    """
    out = []
    for r in store.list_interactions(limit=limit, rated=True,
                                       **({"session_id": session_id} if session_id else {})):
        key = (r.get("id"), str(r.get("rating_created_at")), r.get("rating_thumbs"),
               r.get("rating_correction"))
        if memo is not None and key in memo:
            out.append(memo[key])
            continue
        row = label_interaction(r)
        if memo is not None:
            memo[key] = row
        out.append(row)
    return out
