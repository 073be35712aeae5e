"""Benchmark loading: one :class:`Item` type for every source.

Sources accepted by :func:`load_dataset`:

* **Known names** ``gsm8k``, ``math500``, ``arc_challenge``, ``bbh_mc``, ``svamp``: read
  ``<root>/<name>/<split>.jsonl``. ``<root>`` is, in order of precedence, the ``data_dir``
  argument, the ``COREA_DATA_DIR`` environment variable, or ``<repo>/../shared/data``. The
  provenance and licence of each set are in that folder's README. Nothing is copied into the
  repository.
* **A path to a ``.jsonl`` file** with ``question`` and ``answer`` on every row, plus optional
  ``id``, ``choices`` and ``answer_index``.
* **``hf:<dataset id>[:<config>]``**: ``datasets.load_dataset(id, config, split=split)`` from the
  Hugging Face hub, for online users. Rows need ``question`` (or ``problem``) and ``answer``. A
  GSM8K-style ``#### N`` answer is reduced to ``N``. Offline, it raises ``RuntimeError``.

For multiple-choice rows (``choices`` present) the gold ``answer`` is always the option **letter**
(``A``, ``B``, ...). It is taken from ``answer_index`` when present, otherwise from an ``answer``
that is a letter or an option text.

Data caveat kept unchanged: ``svamp-chal-680`` has an upstream label error (see svamp/README.md).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Item", "KNOWN_DATASETS", "default_data_dir", "load_dataset"]

KNOWN_DATASETS = ("gsm8k", "math500", "arc_challenge", "bbh_mc", "svamp")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Item:
    """One benchmark question.

    Attributes:
        id: a stable identifier (from the file, or ``<dataset>-<split>-<line>`` when the file has
            none).
        question: the question text (for multiple choice, without the options).
        answer: the gold answer as a string: a number or LaTeX for math, or the option letter for
            multiple choice.
        choices: the option texts in letter order, or None for open-ended questions.
        dataset: the dataset name (a known name, the file stem, or ``hf:<id>``).
    """

    id: str
    question: str
    answer: str
    choices: tuple[str, ...] | None
    dataset: str


def default_data_dir() -> Path:
    """``$COREA_DATA_DIR`` if set, else ``<repo root>/../shared/data``."""
    env = os.environ.get("COREA_DATA_DIR")
    if env:
        return Path(env)
    return (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def _answer_str(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _row_to_item(row: dict, where: str, dataset: str, default_id: str) -> Item:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    question = row.get("question", row.get("problem"))
    if isinstance(question, dict) and "stem" in question:  # ARC "question": {stem, choices}
        row = {**row, "choices": row.get("choices", question.get("choices"))}
        question = question["stem"]
    if row.get("answer") is None and row.get("answerKey") is not None:  # HF ARC layout
        ch = row.get("choices")
        labels = [str(x) for x in ch.get("label", [])] if isinstance(ch, dict) else []
        key = str(row["answerKey"])
        if key in labels:
            row = {**row, "answer_index": labels.index(key)}
        else:
            row = {**row, "answer": key}
    missing = ["question"] if question is None else []
    has_index = bool(row.get("choices")) and row.get("answer_index") is not None
    if row.get("answer") is None and not has_index:
        missing.append("answer")
    if missing:
        raise ValueError(f"{where}: row is missing {' and '.join(missing)}")
    choices = row.get("choices")
    if choices is not None:
        if isinstance(choices, dict) and "text" in choices:  # HF ARC layout {text, label}
            choices = choices["text"]
        if not isinstance(choices, (list, tuple)) or not choices or len(choices) > 26:
            raise ValueError(f"{where}: 'choices' must be a list of 1 to 26 option texts")
        choices = tuple(str(c) for c in choices)
        answer = _mc_letter(row, choices, where)
    else:
        answer = _answer_str(row["answer"])
        if "####" in answer:
            answer = answer.split("####")[-1].strip().replace(",", "")
    rid = row.get("id", row.get("unique_id"))
    return Item(id=str(rid) if rid is not None else default_id, question=str(question),
                answer=answer, choices=choices, dataset=dataset)


def _mc_letter(row: dict, choices: tuple[str, ...], where: str) -> str:
    idx = row.get("answer_index")
    if idx is not None:
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(choices):
            raise ValueError(f"{where}: answer_index {idx!r} is not a valid 0-based index "
                             f"for {len(choices)} choices")
        letter = _LETTERS[idx]
        given = row.get("answer")
        if isinstance(given, str) and len(given.strip()) == 1 and given.strip().upper() != letter:
            raise ValueError(f"{where}: answer {given!r} disagrees with answer_index {idx} "
                             f"({letter})")
        return letter
    ans = _answer_str(row["answer"])
    if len(ans) == 1 and ans.upper() in _LETTERS[:len(choices)]:
        return ans.upper()
    if ans in choices:
        return _LETTERS[choices.index(ans)]
    raise ValueError(f"{where}: multiple-choice answer {ans!r} is neither an option letter nor an "
                     "option text (add 'answer_index')")


def _read_jsonl(path: Path, dataset: str, id_prefix: str) -> list[Item]:
    items = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg})") from e
            items.append(_row_to_item(row, where, dataset, f"{id_prefix}-{lineno:05d}"))
    return items


def _load_hf(spec: str, split: str) -> list[Item]:
    ident = spec[3:]
    name, _, config = ident.partition(":")
    try:
        import datasets as hf_datasets
        ds = hf_datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # offline, unknown id, missing split ...
        raise RuntimeError(f"could not load {name!r} (config {config or None!r}, split {split!r}) "
                           f"from the Hugging Face hub: {type(e).__name__}: {e}. Offline? Use a "
                           "local .jsonl file or a known dataset name instead.") from e
    return [_row_to_item(dict(row), f"{spec}[{i}]", spec, f"{name}-{split}-{i:05d}")
            for i, row in enumerate(ds)]


def load_dataset(name_or_path: str, split: str = "test", limit: int | None = None,
                 seed: int | None = None, data_dir: str | os.PathLike | None = None) -> list[Item]:
    """Load a benchmark as a list of :class:`Item` (see the module docstring for sources).

    Args:
        name_or_path: a known name (``gsm8k``, ``math500``, ``arc_challenge``, ``bbh_mc``,
            ``svamp``), a path to a ``.jsonl`` file, or ``hf:<id>[:<config>]``.
        split: file stem for known names (``test``, ``train`` for gsm8k); the HF split for ``hf:``.
            Ignored for explicit paths.
        limit: keep at most this many items. ``None`` keeps all.
        seed: with ``limit``, ``None`` takes the first ``limit`` items. An int takes a reproducible
            random subset (``random.Random(seed).sample``), returned in file order.
        data_dir: root folder holding ``<name>/<split>.jsonl``. The default is
            :func:`default_data_dir`.

    Returns:
        list of :class:`Item`, in file order.

    Raises:
        FileNotFoundError: the file does not exist. The message names the path that was tried.
        ValueError: unknown name, negative ``limit``, invalid JSON, or a row missing question/answer
            (with ``file:line``).
        RuntimeError: an ``hf:`` dataset could not be loaded (e.g. offline).
    """
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    spec = str(name_or_path)
    if spec.startswith("hf:"):
        items = _load_hf(spec, split)
    elif spec in KNOWN_DATASETS:
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        path = root / spec / f"{split}.jsonl"
        if not path.is_file():
            if data_dir is not None:
                where = "data_dir argument"
            elif os.environ.get("COREA_DATA_DIR"):
                where = "COREA_DATA_DIR"
            else:
                where = "default <repo>/../shared/data"
            raise FileNotFoundError(f"{spec} split {split!r}: no file at {path} (root from "
                                    f"{where}). Pass data_dir=... or set COREA_DATA_DIR.")
        items = _read_jsonl(path, spec, f"{spec}-{split}")
    elif spec.endswith(".jsonl") or os.sep in spec or "/" in spec:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no JSONL file at {path.resolve()}")
        items = _read_jsonl(path, path.stem, path.stem)
    else:
        raise ValueError(f"unknown dataset {spec!r}: use one of {', '.join(KNOWN_DATASETS)}, "
                         "a path to a .jsonl file, or hf:<id>")
    if limit is not None and limit < len(items):
        if seed is None:
            items = items[:limit]
        else:
            keep = sorted(random.Random(seed).sample(range(len(items)), limit))
            items = [items[i] for i in keep]
    return items
