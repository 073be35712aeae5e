"""The card of a one-command GRPO run (:mod:`train.gpu_run`): ``card.json`` and ``README.md``.

The before/after numbers are :func:`corea.eval.beforeafter.compare` of the two evaluation runs
(the base SLM and the trained checkpoint on the same item ids): pass@1, ECE (10 bins), Brier
score, AUROC, mean stated confidence, share without a confidence, each with the paired bootstrap
95% interval of its difference, and McNemar's p for pass@1. Confidences are on the 0-1 scale;
wall times in seconds.
"""

from __future__ import annotations

import importlib.metadata
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from corea.eval.beforeafter import compare, format_table
from corea.eval.runs import clean, load_results, machine_info

CARD_JSON = "card.json"
CARD_README = "README.md"
PACKAGES = ("torch", "transformers", "trl", "peft", "vllm")


def machine(gpu: str | None) -> dict[str, Any]:
    """Platform, CPU, the GPU's name (None: none) and the versions of the training packages
    (None: not installed). The host name is left out: the card is meant to be shared."""
    info = {k: v for k, v in machine_info().items() if k != "hostname"}
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {**info, "gpu": gpu, "packages": versions}


def train_steps(train_dir: Path) -> int | None:
    """The last optimizer step logged in ``<train_dir>/metrics.jsonl`` (None: no log)."""
    path = train_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    steps = [json.loads(line).get("step") for line in path.read_text().splitlines() if line.strip()]
    steps = [s for s in steps if isinstance(s, int)]
    return max(steps) if steps else None


def paired(before_dir: Path, after_dir: Path, n_boot: int = 2000) -> dict[str, Any]:
    """The item ids of both runs and their paired comparison.

    Returns:
        ``{"item_ids": before's ids, "after_item_ids": after's ids, "same_items": bool,
        "comparison": compare()'s dict or None, "comparison_error": str or None}``.
    """
    before, after = load_results(before_dir), load_results(after_dir)
    ids_b, ids_a = [r["id"] for r in before], [r["id"] for r in after]
    try:
        res, err = compare(before, after, n_boot=n_boot), None
    except ValueError as exc:  # no item graded in both runs
        res, err = None, str(exc)
    return {"item_ids": ids_b, "after_item_ids": ids_a, "same_items": ids_b == ids_a,
            "comparison": res, "comparison_error": err}


def side(comparison: dict | None, which: str) -> dict[str, Any] | None:
    """``{metric: value}`` of one side (``"before"`` / ``"after"``) of a comparison."""
    if comparison is None:
        return None
    return {k: v[which] for k, v in comparison["metrics"].items()}


def build_card(run: dict[str, Any], before_dir: Path, after_dir: Path, gpu: str | None,
               wall_s: dict[str, float]) -> dict[str, Any]:
    """The card's fields.

    Args:
        run: what the run was: ``command``, ``recipe`` (path), ``recipe_values`` (the YAML),
            ``train_overrides`` (flags passed on to ``train.grpo``), ``model``, ``trained_model``,
            ``train_dir``, ``eval`` (dataset, split, items, seed, backend, max_new_tokens).
        before_dir / after_dir: the two evaluation run folders.
        gpu: the GPU's name, None on CPU.
        wall_s: seconds per stage (``before_eval``, ``train``, ``after_eval``, ``total``).
    """
    pair = paired(before_dir, after_dir)
    res = pair["comparison"]
    return clean({
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **run,
        "train_steps": train_steps(Path(run["train_dir"])),
        "eval": {**run["eval"], "before_run": str(before_dir), "after_run": str(after_dir),
                 "item_ids": pair["item_ids"], "same_items": pair["same_items"]},
        "before": side(res, "before"), "after": side(res, "after"),
        "comparison": res, "comparison_error": pair["comparison_error"],
        "machine": machine(gpu), "wall_s": wall_s})


def readme(card: dict[str, Any]) -> str:
    """The card as Markdown: what was trained, the paired table, machine, times, command."""
    ev, m = card["eval"], card["machine"]
    table = (format_table(card["comparison"], "base", "trained") if card["comparison"]
             else f"No comparison: {card['comparison_error']}")
    lines = [
        f"# GRPO run: {card['model']}",
        "",
        f"Recipe `{card['recipe']}` (last logged step: {card['train_steps']}); trained model "
        f"`{card['trained_model']}`.",
        "",
        f"## Before / after on {ev['dataset']} {ev['split']}, {len(ev['item_ids'])} items",
        "",
        f"The same item ids before and after: {'yes' if ev['same_items'] else 'NO'}. Backend "
        f"{ev['backend']}, greedy, at most {ev['max_new_tokens']} new tokens; confidence is "
        "the SLM's stated confidence (0-1); Δ with a paired bootstrap 95% interval.",
        "",
        table,
        "",
        "## Machine and time",
        "",
        f"GPU: {m['gpu'] or 'none (CPU)'}; {m['processor']} ({m['cpu_usable']} usable CPUs); "
        f"Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v) + ".",
        "",
        "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in card["wall_s"].items()) + ".",
        "",
        "## Regenerate",
        "",
        "```",
        card["command"],
        "```",
        ""]
    return "\n".join(lines)


def write_card(out_dir: Path, card: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``card.json`` and ``README.md`` into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / CARD_JSON, out_dir / CARD_README
    js.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    md.write_text(readme(card), encoding="utf-8")
    return js, md
