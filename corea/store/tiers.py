"""One record per tier: the ``interaction_tiers`` row of each tier that ran in a turn, and the
per-tier view of any logged interaction, new or old.

A tier record is a dict with the keys of :data:`TIER_KEYS`: the keys of
:meth:`corea.events.TierStep.to_dict` (what the API reports per tier) plus ``output`` (the tier's
completion text), ``confidence_note`` and ``extra`` (a dict of the tier's other fields: token
signals, the echoed confidence, the decision's stated confidence and note, and any field a later
:class:`~corea.events.TierStep` / :class:`~corea.events.ModelOutput` adds). Units: tokens,
seconds, USD; confidences in [0, 1].

Rows logged before the table existed (revision 0003 and older) have no tier rows;
:func:`legacy_tiers` rebuilds their records from the ``slm_*`` / ``llm_*`` columns and, for an
N-tier turn, the ``extra["tiers"]`` JSON those versions wrote. Pure functions: no database here
(:mod:`corea.store.storage` reads and writes the table).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ..events import CascadeResult, DecisionInfo, ModelOutput, TierStep

__all__ = ["TIER_KEYS", "tier_values", "turn_tiers", "tier_record", "legacy_tiers"]

TIER_KEYS = ("index", "role", "model", "threshold", "answered", "answer", "answer_method",
             "stated_confidence", "confidence_method", "confidence_note", "finish_reason",
             "prompt_tokens", "completion_tokens", "cost_usd", "latency_s", "ttft_s", "error",
             "decision", "reason", "signal", "signal_value", "message", "output", "extra")
"""Keys of a tier record, in order."""

_OUTPUT_COLUMNS = {"text", "answer", "answer_method", "confidence", "confidence_method",
                   "confidence_note", "prompt_tokens", "completion_tokens", "latency_s",
                   "ttft_s", "finish_reason", "cost_usd", "error", "model"}
"""ModelOutput fields with a column of their own (``states``, hidden-state vectors, are never
logged; every other field goes into ``extra``)."""

_DECISION_COLUMNS = {"defer", "reason", "confidence", "threshold", "message", "signal"}
_STEP_COLUMNS = {"index", "role", "model", "output", "threshold", "decision", "answered"}


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)


def _others(obj: Any, known: set[str], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dataclass's fields without a column (``None`` values left out)."""
    return {f.name: _json_safe(getattr(obj, f.name)) for f in fields(obj)
            if f.name not in known and f.name not in skip and getattr(obj, f.name) is not None}


def tier_values(step: TierStep) -> dict[str, Any]:
    """The record of one tier that ran (JSON-serialisable; ``index`` is the table's
    ``tier_index``). The stated confidence is kept for every tier that states one (the last
    tier's is normally ``None``)."""
    o: ModelOutput = step.output
    d: DecisionInfo | None = step.decision
    extra = _others(o, _OUTPUT_COLUMNS, skip=("states",))
    if d is not None:
        extra.update({f"decision_{k}": v for k, v in _others(d, _DECISION_COLUMNS).items()})
    extra.update(_others(step, _STEP_COLUMNS))
    return {"index": int(step.index), "role": step.role, "model": step.model,
            "threshold": step.threshold, "answered": bool(step.answered), "answer": o.answer,
            "answer_method": o.answer_method, "stated_confidence": o.confidence,
            "confidence_method": o.confidence_method, "confidence_note": o.confidence_note,
            "finish_reason": o.finish_reason, "prompt_tokens": int(o.prompt_tokens or 0),
            "completion_tokens": int(o.completion_tokens or 0),
            "cost_usd": float(o.cost_usd or 0.0), "latency_s": float(o.latency_s or 0.0),
            "ttft_s": o.ttft_s, "error": o.error,
            "decision": None if d is None else ("deferred" if d.defer else "kept"),
            "reason": d.reason if d else None, "signal": d.signal if d else None,
            "signal_value": d.confidence if d else None, "message": d.message if d else None,
            "output": o.text or "", "extra": extra}


def turn_tiers(result: CascadeResult) -> list[dict[str, Any]]:
    """The records of every tier that ran in a turn (:meth:`CascadeResult.tier_steps`). A
    result whose steps mark no answering tier (built by hand or by an older caller) does not say
    which tier answered: the last one whose model and answer are the final ones is marked."""
    values = [tier_values(step) for step in result.tier_steps()]
    if not any(v["answered"] for v in values) and result.final_answer is not None:
        for v in reversed(values):
            if v["model"] == result.final_model and v["answer"] == result.final_answer:
                v["answered"] = True
                break
    return values


def tier_record(values: dict[str, Any]) -> dict[str, Any]:
    """A tier record with every key of :data:`TIER_KEYS` (missing ones ``None``; ``extra`` a
    dict), from :func:`tier_values` output, a table row or an old ``extra["tiers"]`` entry."""
    rec = {k: values.get(k) for k in TIER_KEYS}
    rec["extra"] = dict(values.get("extra") or {})
    rec["answered"] = bool(rec["answered"])
    rec["output"] = rec["output"] or ""
    for k in ("prompt_tokens", "completion_tokens"):
        rec[k] = int(rec[k] or 0)
    for k in ("cost_usd", "latency_s"):
        rec[k] = float(rec[k] or 0.0)
    return rec


def _error_of(errors: list[str], prefix: str) -> str | None:
    return next((e[len(prefix):] for e in errors if e.startswith(prefix)), None)


def legacy_tiers(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The tier records of an interaction logged without tier rows (revision 0003 and older).

    Args:
        row: the interaction's columns (``errors`` a list, ``extra`` a dict), as
            :meth:`corea.store.storage.Store.get_interaction` gives them.

    An N-tier turn's ``extra["tiers"]`` is taken as written; otherwise tier 0 comes from the
    ``slm_*`` columns and, when the question was deferred, tier 1 from the ``llm_*`` ones (cost,
    time to first token and finish reason from ``extra``, errors from ``errors``)."""
    extra = row.get("extra") or {}
    if extra.get("tiers"):
        return [tier_record(t) for t in extra["tiers"]]
    errors = [str(e) for e in row.get("errors") or []]
    deferred = row.get("llm_model") is not None
    final_model = row.get("final_model")
    by_llm = deferred and final_model == row.get("llm_model") \
        and row.get("final_answer") == row.get("llm_answer")
    reason = row.get("decision_reason")
    tiers = [tier_record({
        "index": 0, "role": "slm", "model": row.get("slm_model"),
        "threshold": row.get("threshold"),
        "answered": row.get("final_answer") is not None and not by_llm
        and final_model == row.get("slm_model"),
        "answer": row.get("slm_answer"), "answer_method": row.get("slm_answer_method"),
        "stated_confidence": row.get("confidence"),
        "confidence_method": row.get("confidence_method"),
        "confidence_note": row.get("confidence_note"),
        "finish_reason": extra.get("slm_finish_reason"),
        "prompt_tokens": row.get("slm_prompt_tokens"),
        "completion_tokens": row.get("slm_completion_tokens"),
        "cost_usd": extra.get("slm_cost_usd"), "latency_s": row.get("slm_latency_s"),
        "ttft_s": extra.get("slm_ttft_s"), "error": _error_of(errors, "slm error: "),
        "decision": None if reason is None else
        ("deferred" if row.get("decision_defer") else "kept"),
        "reason": reason, "signal": extra.get("decision_signal", "verbal" if reason else None),
        "signal_value": extra.get("decision_confidence", row.get("confidence")
                                  if reason else None),
        "message": row.get("decision_message"), "output": row.get("slm_output"),
        "extra": {"signals": extra["slm_signals"]} if extra.get("slm_signals") else {}})]
    if deferred:
        tiers.append(tier_record({
            "index": 1, "role": "llm", "model": row.get("llm_model"), "answered": by_llm,
            "answer": row.get("llm_answer"), "answer_method": extra.get("llm_answer_method"),
            "finish_reason": extra.get("llm_finish_reason"),
            "prompt_tokens": row.get("llm_prompt_tokens"),
            "completion_tokens": row.get("llm_completion_tokens"),
            "cost_usd": extra.get("llm_cost_usd"), "latency_s": row.get("llm_latency_s"),
            "ttft_s": extra.get("llm_ttft_s"), "error": _error_of(errors, "llm error: "),
            "output": row.get("llm_output")}))
    return tiers
