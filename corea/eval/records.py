"""The one record of an evaluated item: every tier's graded output, and the two-tier view of it.

A row of ``items.jsonl`` (:func:`corea.eval.harness.evaluate`) holds one record per tier that has
run on the item, in cascade order:

.. code-block:: json

    {"id": "...", "dataset": "...", "question": "...", "choices": null, "gold": "...",
     "n_tiers": 3,
     "tiers": [{"model": "...", "output": {...ModelOutput...}, "correct": true,
                "grade": "correct", "grade_note": "...", "cost_usd": 1.2e-05,
                "confidence": 0.8, "signal": "verbal", "usable": true,
                "verify": {...P(True)...}}, ...],
     "wall_s": 3.2, "done_at": "..."}

- ``n_tiers``: the run's number of tiers; a row with fewer records is *pending* (an SLM-first
  run's later tiers have not run yet, :func:`is_pending`); ``slm_only``: true for an
  ``--slm-only`` run (one record, never pending).
- ``output``: the tier's :class:`corea.events.ModelOutput` as a dict (the last tier's without
  its stated confidence, :data:`LLM_DROP`; hidden states included when the engine read them).
- ``confidence`` / ``signal``: the tier's deciding confidence in [0, 1] and its signal
  (``verbal`` for the first tier; a middle tier's ``confidence_source``: ``verbal``,
  ``tokprob`` or ``agreement``, with the live cascade's fallback to ``verbal``); ``None`` for
  the last tier.
- ``usable``: the output can be kept (no error, not cut off, an answer parsed:
  :func:`output_usable`); ``verify``: the tier's self-verification when the run asked for it.

**The two-tier keys** every reader of a run knows (``slm``, ``llm``, ``slm_correct``,
``llm_grade``, ``slm_verify``, ...: the first tier against the last) are derived from the records
(:func:`two_tier_keys`), and a row written before the records existed (only those keys, as in the
committed runs of ``data/generations/``) gets its records derived from them (:func:`legacy_tiers`).
:func:`with_views` gives a row both, so :func:`corea.eval.runs.load_results` returns every row,
old or new, with ``tiers`` and the two-tier keys alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..policy import unusable

if TYPE_CHECKING:
    from ..events import ModelOutput
    from ..grading import Grade

__all__ = ["LLM_DROP", "PENDING", "PENDING_NOTE", "NOT_RUN_NOTE", "output_dict", "output_usable",
           "tier_record", "is_pending", "n_tiers_of", "two_tier_keys",
           "legacy_tiers", "with_views", "as_record", "TWO_TIER_KEYS"]

LLM_DROP = ("confidence", "confidence_method", "confidence_note", "confidence_expected",
            "confidence_spread", "confidence_digits")
"""Fields of a last-tier (LLM) output that a row leaves out: it states no confidence."""

PENDING = "pending"
"""``llm_grade`` of a row whose later tiers an SLM-first run has not run yet (:func:`is_pending`)."""
PENDING_NOTE = "SLM first: the LLM runs in a later phase (rerun the same command)"
NOT_RUN_NOTE = "--slm-only"
TWO_TIER_KEYS = ("slm", "llm", "slm_correct", "slm_grade", "slm_grade_note", "llm_correct",
                 "llm_grade", "llm_grade_note", "slm_verify")
"""The keys a row written before the records held (:func:`two_tier_keys` derives them)."""


def output_dict(out: ModelOutput | None, drop: Sequence[str] = ()) -> dict | None:
    """``out`` as a row's JSON dict without the ``drop`` fields; None for no output."""
    from dataclasses import asdict

    if out is None:
        return None
    d = asdict(out)
    for k in drop:
        d.pop(k, None)
    return d


def output_usable(out: dict) -> bool:
    """Whether a stored output dict is an answer that can be kept (no error, not cut off, an
    answer parsed: :func:`corea.policy.unusable`); a hand-made dict without an ``answer`` field
    is not judged on it."""
    return out.get("error") is None and unusable(out.get("answer", "?"),
                                                 out.get("finish_reason")) is None


def tier_record(out: ModelOutput, g: Grade, last: bool, signal: str | None = None,
                confidence: float | None = None, verified: dict | None = None) -> dict:
    """One tier's record (module docstring) of its output ``out`` graded ``g``: a tier that is
    not the ``last`` decides on ``confidence`` from ``signal``; ``verified``: its
    self-verification."""
    return {"model": out.model, "output": output_dict(out, LLM_DROP if last else ()),
            "correct": g.correct, "grade": g.status, "grade_note": g.note,
            "cost_usd": out.cost_usd, "confidence": None if last else confidence,
            "signal": None if last else signal,
            "usable": out.error is None and unusable(out.answer, out.finish_reason) is None,
            **({"verify": verified} if verified is not None else {})}


def n_tiers_of(row: dict) -> int:
    """How many tiers the row's run has (2 for a row without records)."""
    return int(row.get("n_tiers") or len(row.get("tiers") or ()) or 2)


def is_pending(row: dict) -> bool:
    """Whether ``row`` waits for later tiers (an SLM-first run's first phases); a row without
    records is pending when its ``llm_grade`` says so."""
    if "tiers" not in row:
        return row.get("llm_grade") == PENDING
    return not row.get("slm_only") and len(row["tiers"]) < n_tiers_of(row)


def two_tier_keys(row: dict) -> dict:
    """The two-tier keys of a row with records: its first tier as the SLM, its last as the LLM
    (``llm`` None with ``llm_grade`` ``pending`` while later tiers have not run, ``not_run``
    for an ``--slm-only`` row); ``slm_verify`` when the first tier was verified."""
    tiers = row["tiers"]
    first = tiers[0]
    if row.get("slm_only"):
        last, status, note = None, "not_run", NOT_RUN_NOTE
    elif is_pending(row):
        last, status, note = None, PENDING, PENDING_NOTE
    else:
        last = tiers[-1]
        status, note = last["grade"], last["grade_note"]
    return {"slm": first["output"], "llm": None if last is None else last["output"],
            "slm_correct": first["correct"], "slm_grade": first["grade"],
            "slm_grade_note": first["grade_note"],
            "llm_correct": None if last is None else last["correct"],
            "llm_grade": status, "llm_grade_note": note,
            **({"slm_verify": first["verify"]} if "verify" in first else {})}


def _legacy_tier(out: dict, prefix: str, row: dict, last: bool) -> dict:
    rec = {"model": out.get("model"), "output": out, "correct": row.get(f"{prefix}_correct"),
           "grade": row.get(f"{prefix}_grade"), "grade_note": row.get(f"{prefix}_grade_note"),
           "cost_usd": float(out.get("cost_usd") or 0.0),
           "confidence": None if last else out.get("confidence"),
           "signal": None if last else "verbal", "usable": output_usable(out)}
    if not last and "slm_verify" in row:
        rec["verify"] = row["slm_verify"]
    return rec


def legacy_tiers(row: dict) -> list[dict]:
    """The tier records of a row written with only the two-tier keys: the SLM's (deciding on its
    stated confidence, as those runs did) and, when it ran, the LLM's."""
    tiers = [_legacy_tier(row.get("slm") or {}, "slm", row, False)]
    if isinstance(row.get("llm"), dict):
        tiers.append(_legacy_tier(row["llm"], "llm", row, True))
    return tiers


def with_views(row: dict) -> dict:
    """``row`` with both its tier records (``tiers``, ``n_tiers``) and its two-tier keys, whichever
    it was written with (a new dict; the outputs are shared, not copied)."""
    if "tiers" in row:
        return {**row, **two_tier_keys(row)}
    out = {**row, "tiers": legacy_tiers(row), "n_tiers": 2}
    if not isinstance(row.get("llm"), dict) and row.get("llm_grade") != PENDING:
        out["slm_only"] = True  # the first tier only (--slm-only), never pending
    return out


def as_record(row: dict) -> dict:
    """``row`` as it is written now: its tier records without the two-tier keys (a row written
    with only those keys is converted, :func:`legacy_tiers`); a row with records is returned as
    is."""
    if "tiers" in row and not any(k in row for k in TWO_TIER_KEYS):
        return row
    view = with_views(row)
    return {k: v for k, v in view.items() if k not in TWO_TIER_KEYS}
