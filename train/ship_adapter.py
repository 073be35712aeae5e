"""Package a trained calibration adapter of the embedded SLM for shipping, with its card.

Copies the PEFT adapter (``adapter_config.json`` with its base rewritten to ``embedded:slm``, so
the folder works on any machine; ``adapter_model.safetensors``) and the question ids it was
trained on (``train_ids.json``) into ``--out`` and writes
``card.json`` and ``README.md``: name, version, what it was trained on (the run's
``train_ids.json`` and recipe), steps, the before/after comparison on held-out test runs
(:func:`corea.eval.beforeafter.compare`, base SLM vs the adapter) and the commands that made
them: the card's regenerate command selects the same training examples
(:func:`regenerate_command`, from the run's ``data_args.json``). Test runs are only measured here,
never trained on.

    python -m train.ship_adapter runs/cpu-calibrate-0.5b --version v1 \\
        --recipe train/recipes/cpu-calibrate-0.5b.yaml \\
        --test gsm8k=data/generations/gsm8k-test-200:data/generations/gsm8k-test-200-calib-v1 \\
        --test svamp=data/generations/svamp-test-100:data/generations/svamp-test-100-calib-v1 \\
        --out corea/assets/adapters/qwen2.5-coder-0.5b-instruct
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from corea.adapters import adapter_scope, write_adapter_scope
from corea.eval.beforeafter import METRICS, compare, format_table
from corea.eval.runs import load_results, read_run


def _metrics(res: dict) -> dict:
    side = {w: {k: v[w] for k, v in res["metrics"].items()} for w in ("before", "after")}
    return {"n": res["n"], **side,
            "delta_ci": {k: v["delta_ci"] for k, v in res["metrics"].items()},
            "mcnemar_p": res["mcnemar_p"], "discordant": res["discordant"]}


def regenerate_command(recipe: str, shipped: Path | None, samples: bool = True) -> str:
    """The command that retrains the adapter on the same examples: the recipe, restricted to the
    questions it trained on (``<shipped>/train_ids.json``, copied there: the runs may have grown
    since) and with or without their sampled solutions as it was trained."""
    cmd = f"python -m train.confidence --config {recipe}"
    if shipped is not None:
        cmd += f" --question_ids {Path(shipped).as_posix()}/train_ids.json"
    return cmd + ("" if samples else " --samples false")


def ship(run_dir: str, out: str, version: str, recipe: str, tests: dict[str, tuple[str, str]],
         name: str | None = None) -> dict:
    """Copy the adapter and write its card; returns the card.

    Raises:
        FileNotFoundError: the run has no adapter.
        ValueError: a "test" run is not a test split, or the runs share no graded item.
    """
    src = Path(run_dir)
    cfg = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
    trainer_state = {}
    for ck in sorted(src.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])):
        f = ck / "trainer_state.json"
        if f.is_file():
            trainer_state = json.loads(f.read_text(encoding="utf-8"))
    results = {}
    for key, (before, after) in tests.items():
        for d in (before, after):
            if (read_run(d) or {}).get("split") not in ("test", None):
                raise ValueError(f"{d} is not a test split")
        res = compare(load_results(before), load_results(after))
        results[key] = {**_metrics(res), "runs": {"before": before, "after": after},
                        "table": format_table(res, "base SLM", f"+ adapter {version}")}
    ids_file = src / "train_ids.json"
    train_ids = json.loads(ids_file.read_text(encoding="utf-8")) if ids_file.is_file() else []
    data_file = src / "data_args.json"
    data_args = json.loads(data_file.read_text(encoding="utf-8")) if data_file.is_file() else {}
    import yaml

    rec = yaml.safe_load(Path(recipe).read_text(encoding="utf-8")) or {}
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    cfg["base_model_name_or_path"] = "embedded:slm"
    (dest / "adapter_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    shutil.copyfile(src / "adapter_model.safetensors", dest / "adapter_model.safetensors")
    if ids_file.is_file():
        shutil.copyfile(ids_file, dest / "train_ids.json")
    scope = adapter_scope(src)
    write_adapter_scope(dest, scope)
    card = {
        "name": name or f"COREA calibration adapter {version}",
        "version": version,
        "base": "embedded:slm (Qwen2.5-Coder-0.5B-Instruct, the embedded GGUF)",
        "scope": scope,
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": [str(x) for x in rec.get("runs", [])],
        "n_train_questions": len(train_ids),
        "recipe": str(recipe),
        "recipe_values": {k: rec.get(k) for k in (
            "adapter_scope", "target", "estimator", "format_weight", "eos_weight",
            "digit_weight", "anchor_weight", "lora_r",
            "lora_alpha", "lora_target_modules", "lora_top_layers", "learning_rate",
            "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps")},
        "steps": trainer_state.get("global_step"),
        "command": regenerate_command(recipe, dest if ids_file.is_file() else None,
                                      data_args.get("samples", True)),
        "test": results,
        "metrics_names": METRICS,
    }
    (dest / "card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    lines = [f"# {card['name']}", "",
             "A LoRA adapter of the embedded SLM (Qwen2.5-Coder-0.5B-Instruct) trained to state a "
             "calibrated confidence after its own solution (`train/confidence.py`). It runs on "
             "llama.cpp on top of the unchanged quantized GGUF (`corea/backends/lora_gguf.py` "
             "converts it once to llama.cpp's LoRA GGUF: `adapter-lora.gguf` next to these files "
             "in a checkout, `<cache_dir>/lora/` when it ships inside the installed package).", "",
             *(["**Scope: the confidence line only.** The solution is the base model's, token "
                "for token (its KV cache is the base's); the adapter is switched on from the "
                "solution's last token and writes the `Confidence: 0.d` line "
                "(`corea_adapter.json`; `corea.adapters.SCOPES`). pass@1 is the base's by "
                "construction.", ""] if scope == "confidence" else []),
             f"- Trained on: {', '.join(card['data'])} ({len(train_ids)} train questions; "
             "GSM8K **train** split only)",
             f"- Recipe: `{recipe}`; {card['steps']} optimizer steps",
             f"- Regenerate: `{card['command']}`, then `python -m train.ship_adapter ...` "
             "(see its docstring)",
             f"- Packaged: {card['trained_at']}", "",
             "Held out, the same items before (base SLM) and after (with this adapter): greedy, "
             "512 tokens, same prompt, llama.cpp; Δ with a paired bootstrap 95% interval.", ""]
    for key, r in results.items():
        lines += [f"## {key}: `{r['runs']['after']}` vs `{r['runs']['before']}`", "",
                  r["table"], ""]
    (dest / "README.md").write_text("\n".join(lines), encoding="utf-8")
    return card


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.ship_adapter",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", help="the training run's output folder (a PEFT adapter)")
    ap.add_argument("--out", required=True, help="the shipped adapter folder")
    ap.add_argument("--version", required=True)
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--name", default=None)
    ap.add_argument("--test", action="append", default=[], metavar="NAME=BEFORE:AFTER",
                    help="a held-out comparison: base SLM run and adapter run on the same items")
    a = ap.parse_args(argv)
    try:
        tests = {}
        for t in a.test:
            k, _, v = t.partition("=")
            before, _, after = v.partition(":")
            if not (k and before and after):
                raise ValueError(f"--test takes NAME=BEFORE:AFTER, got {t!r}")
            tests[k] = (before, after)
        card = ship(a.run_dir, a.out, a.version, a.recipe, tests, a.name)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: card[k] for k in ("name", "version", "steps")}, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
