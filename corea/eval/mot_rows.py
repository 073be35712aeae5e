"""``mot`` evaluation rows made from a chain-of-thought run and a program-of-thought run.

A ``mot`` tier (:func:`corea.cascade.program.solve_mot`) solves twice, independently: its
chain of thought (the ``cot`` prompt) and then its program (the ``pot`` prompt, a fresh chat),
and :func:`corea.cascade.program.merge_mot` joins the two outputs. Under greedy decoding
(temperature 0, the harness's default) each half is exactly what a ``cot`` run and a ``pot``
run of the same models and settings wrote for that item, so a ``mot`` run is their merge,
item by item, with the live tier's own merge function — no generation needed, and no
approximation beyond what the two source runs record.

Per tier (``slm``, and ``llm`` where both sources have it): the merged output (two texts, summed
tokens, latency and cost, the program's fields, ``cot_answer``, ``agreement``; the answer, the
stated confidence, the token signals and hidden states of the solution whose answer it takes);
the grade is the source's whose answer is taken (:func:`corea.cascade.program.mot_takes_program`),
so nothing is re-graded. Dropped: ``slm_verify`` and samples (they score the chain of thought
only).

``corea combine-mot --cot DIR --pot DIR --run-dir OUT`` (:mod:`corea.cli.combine_mot`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..cascade.program import merge_mot, mot_takes_program
from ..events import ModelOutput
from .harness import LLM_DROP, output_dict
from .runs import ITEMS_FILE, RUN_FILE, load_results, now, read_run, write_json

SIDES = ("slm", "llm")
"""Row keys of the two tiers of a two-tier run (the SLM deciding, the LLM last)."""
_GRADE_KEYS = ("correct", "grade", "grade_note")
_FIELDS = {f.name for f in dataclasses.fields(ModelOutput)}


class SourceMismatch(ValueError):
    """The two runs are not of the same items, dataset, split, models or settings."""


@dataclass
class CombineReport:
    """What :func:`combine_runs` wrote.

    Attributes:
        n_items: rows written (items in both runs).
        n_with_llm: rows whose LLM tier is merged too (both runs have it); the others carry the
            SLM tier only, as an SLM-only run does.
        n_agree: rows whose SLM CoT and program answers agree.
        out_dir: the ``mot`` run folder.
    """
    n_items: int
    n_with_llm: int
    n_agree: int
    out_dir: Path


def output_from_dict(d: dict) -> ModelOutput:
    """A row's output dict (:func:`corea.eval.harness.output_dict`) as a :class:`ModelOutput`;
    keys the type does not know are ignored."""
    return ModelOutput(**{k: v for k, v in d.items() if k in _FIELDS})


def merge_side(cot: dict, pot: dict, last: bool) -> tuple[dict, bool]:
    """The ``mot`` output dict of one tier from its ``cot`` and ``pot`` output dicts, and whether
    it takes the program's answer (then its grade is the ``pot`` row's)."""
    c, p = output_from_dict(cot), output_from_dict(pot)
    out = ModelOutput(model=c.model)
    merge_mot(out, c, p, last)
    return output_dict(out, LLM_DROP if last else ()), mot_takes_program(c, p)


def combine_row(cot_row: dict, pot_row: dict) -> dict:
    """One ``mot`` item row from the item's ``cot`` and ``pot`` rows (module docstring).

    Raises:
        SourceMismatch: the rows are of different items or golds.
    """
    if str(cot_row["id"]) != str(pot_row["id"]) or cot_row.get("gold") != pot_row.get("gold"):
        raise SourceMismatch(f"item {cot_row['id']!r}: the two runs disagree on the item or gold")
    row = {k: cot_row[k] for k in ("id", "dataset", "question", "choices", "gold") if k in cot_row}
    for side in SIDES:
        row[side] = None
        for key in _GRADE_KEYS:
            row[f"{side}_{key}"] = None
        if not (cot_row.get(side) and pot_row.get(side)):
            continue
        merged, program = merge_side(cot_row[side], pot_row[side], last=side == "llm")
        src = pot_row if program else cot_row
        row[side] = merged
        for key in _GRADE_KEYS:
            row[f"{side}_{key}"] = src.get(f"{side}_{key}")
    row["wall_s"] = (cot_row.get("wall_s") or 0.0) + (pot_row.get("wall_s") or 0.0)
    return row


def _check_runs(cot_run: dict, pot_run: dict) -> None:
    """Raise :class:`SourceMismatch` unless both runs are of the same dataset and split, the
    same model per tier, and the ``pot`` run's tiers solve by program."""
    a, b = cot_run.get("identity") or {}, pot_run.get("identity") or {}
    for key in ("dataset", "split"):
        if a.get(key) != b.get(key):
            raise SourceMismatch(f"{key}: {a.get(key)!r} (cot) vs {b.get(key)!r} (pot)")
    for side in SIDES:
        ca, pb = a.get(side) or {}, b.get(side) or {}
        if ca.get("model") != pb.get("model") or ca.get("max_new_tokens") != pb.get("max_new_tokens"):
            raise SourceMismatch(f"the {side} differs between the runs")
        if (ca.get("solve") or "cot") != "cot" or pb.get("solve") != "pot":
            raise SourceMismatch(f"the {side}: need a cot run and a pot run")
        if ca.get("temperature", 0.0) != 0.0 or pb.get("temperature", 0.0) != 0.0:
            raise SourceMismatch("both runs must decode greedily (temperature 0)")


def combine_runs(cot_dir: str | os.PathLike, pot_dir: str | os.PathLike,
                 out_dir: str | os.PathLike) -> CombineReport:
    """Write the ``mot`` run of the items both runs hold into ``out_dir`` (``items.jsonl`` and
    ``run.json``, whose identity is the ``cot`` run's with ``solve: mot`` per tier, the ``pot``
    run's program prompt version, and ``combined_from``).

    Raises:
        SourceMismatch: the runs differ (:func:`_check_runs`) or share no item.
        FileExistsError: ``out_dir`` already holds an ``items.jsonl``.
        FileNotFoundError: a source has no results.
    """
    cot_run, pot_run = read_run(Path(cot_dir)), read_run(Path(pot_dir))
    for run, d in ((cot_run, cot_dir), (pot_run, pot_dir)):
        if run is None:
            raise FileNotFoundError(f"no run.json in {d}")
    _check_runs(cot_run, pot_run)
    out = Path(out_dir)
    if (out / ITEMS_FILE).exists() or (out / (ITEMS_FILE + ".gz")).exists():
        raise FileExistsError(f"{out / ITEMS_FILE} exists; choose a new --run-dir")
    pot_rows = {str(r["id"]): r for r in load_results(pot_dir)}
    rows = [combine_row(r, pot_rows[str(r["id"])]) for r in load_results(cot_dir)
            if str(r["id"]) in pot_rows]
    if not rows:
        raise SourceMismatch("the two runs share no item")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ITEMS_FILE, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    identity = dict(cot_run["identity"])
    for side in SIDES:
        if identity.get(side):
            identity[side] = {**identity[side], "solve": "mot"}
    identity.pop("verify", None)
    identity["pot_version"] = pot_run["identity"].get("pot_version")
    identity["hidden_states"] = bool(cot_run["identity"].get("hidden_states")
                                     and pot_run["identity"].get("hidden_states"))
    stamp = now()
    record = {k: v for k, v in cot_run.items() if k not in ("sessions", "summary")}
    record.update({
        "identity": identity, "started_at": stamp, "updated_at": stamp, "sessions": [],
        "pot_prompts": pot_run.get("pot_prompts"),
        "combined_from": {"cot": str(cot_dir), "pot": str(pot_dir),
                          "cot_prompt_version": cot_run["identity"].get("prompt_version"),
                          "pot_prompt_version": pot_run["identity"].get("prompt_version")},
        "command": f"corea combine-mot --cot {cot_dir} --pot {pot_dir} --run-dir {out_dir}",
    })
    write_json(out / RUN_FILE, record)
    n_llm = sum(1 for r in rows if r.get("llm"))
    n_agree = sum(1 for r in rows if (r.get("slm") or {}).get("agreement"))
    return CombineReport(len(rows), n_llm, n_agree, out)
