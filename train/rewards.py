"""Reward functions for GRPO training of the SLM (TRL's reward-function contract).

(Just over 400 lines: the registry and every reward it names, each a short function with its
docstring, read side by side.)

Every reward is called by TRL as ``f(prompts=..., completions=..., completion_ids=..., **columns,
trainer_state=..., log_extra=..., log_metric=...)`` and returns one ``float`` (or ``None`` = "no
reward for this completion", which TRL turns into NaN and leaves out of the sums and means) per
completion. ``completions`` are conversational (``[{"role": "assistant", "content": str}]`` per
completion) or plain strings; both are accepted. ``answer`` is the dataset's gold-answer column and
``choices`` (optional column) the option texts of a multiple-choice row. Unknown keyword arguments
are ignored.

Rewards (:data:`REWARDS`, keyed by ``__name__`` so TRL logs ``rewards/<name>/mean``):

* ``correctness`` -- 1.0 if the final answer (:func:`corea.parsing.extract_answer`) is equivalent
  to the gold answer (:func:`corea.grading.grade`), else 0.0; ``None`` if the gold answer is
  ungradable (or grading timed out).
* ``format`` -- 1.0 if the completion has a boxed final answer AND a parsable ``Confidence:`` line
  after it, else 0.0. Searches the whole text (a chat template that pre-fills ``<think>`` or any
  other prefix does not zero it; multi-line completions count).
* calibration, ``c`` = stated confidence, ``y`` = this completion's correctness, ``ā`` = group
  accuracy = mean correctness of all G completions of the same prompt:

  - ``confidence_l1`` (the default): ``-|c - ā|``
  - ``confidence_l2``: ``-(c - ā)²``
  - ``brier``: ``-(c - y)²``
  - ``log_score``: ``y·log c + (1 - y)·log(1 - c)``, clipped below at ``log(eps)``, eps = 1e-4.

  No parsable confidence (including an empty completion) -> the minimum (-1, or ``log(eps)``).
  Ungradable gold -> ``None``. Never NaN.

Grouping (TRL 1.16 layout): ``RepeatSampler`` puts the G completions of a prompt next to each other
in the *global* generation batch, but ``GRPOTrainer._calculate_rewards`` calls the reward functions
on each process's LOCAL slice and gathers the rewards afterwards; with several processes a group
can straddle two processes. So ``ā`` is computed by prompt identity (the dataset ``id`` column when
present, else the ``prompts`` kwarg), over the (key, correctness) pairs of ALL processes
(``torch.distributed.all_gather_object`` when a process group with more than one rank exists).

:func:`batch_metrics` gives accuracy / mean confidence / share without confidence / ECE / Brier of a
batch, and :class:`WithBatchMetrics` wraps a reward so that these are logged every step through
TRL's ``log_metric`` kwarg (as ``calibration/<metric>``).
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import re
from typing import Any, Callable, Sequence

from corea.grading import grade
from corea.metrics import brier_score, ece
from corea.parsing import (confidence_label_spans, extract_answer, extract_boxed,
                           parse_confidence)

__all__ = [
    "REWARDS", "DEBUG_REWARDS", "EPS", "CalibrationReward", "WithBatchMetrics", "batch_metrics",
    "brier", "completion_text", "confidence_l1", "confidence_l2", "correctness", "distinct_chars",
    "format_reward", "get_reward", "group_accuracy", "has_format", "judge", "log_score",
    "reward_names",
]

EPS = 1e-4
"""Probability floor of ``log_score``: its minimum is ``log(EPS)``."""

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")


# ------------------------------------------------------------------------------------ inputs

def completion_text(completion: Any) -> str:
    """The text of one completion: a plain string, or the assistant message(s) of a
    conversational completion (``reasoning_content``/``thinking`` first, then ``content``;
    content given as a list of parts keeps its text parts). ``None`` -> ``""``."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    messages = [completion] if isinstance(completion, dict) else list(completion)
    parts: list[str] = []
    for m in messages:
        if isinstance(m, str):
            parts.append(m)
            continue
        if not isinstance(m, dict) or m.get("role", "assistant") != "assistant":
            continue
        for key in ("reasoning_content", "thinking", "content"):
            v = m.get(key)
            if isinstance(v, str):
                parts.append(v)
            elif isinstance(v, list):
                parts.extend(p.get("text") or "" for p in v
                             if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(p for p in parts if p)


def _column(kwargs: dict, name: str, n: int) -> list:
    v = kwargs.get(name)
    if v is None:
        return [None] * n
    v = list(v)
    if len(v) != n:
        raise ValueError(f"column {name!r} has {len(v)} values for {n} completions")
    return v


def _gold(v: Any) -> str | int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v  # a 0-based option index
    return "" if v is None else str(v)


def _choices(v: Any) -> tuple[str, ...] | None:
    return tuple(str(x) for x in v) if v else None


# ------------------------------------------------------------------------------------ grading

@functools.lru_cache(maxsize=65536)
def _grade_cached(pred: str, gold: str | int, choices: tuple[str, ...] | None) -> bool | None:
    return grade(pred, gold, choices=list(choices) if choices else None).correct


@functools.lru_cache(maxsize=8192)
def _gold_gradable(gold: str | int, choices: tuple[str, ...] | None) -> bool:
    """Whether the gold answer can be graded at all (it matches itself)."""
    if isinstance(gold, str) and not gold.strip():
        return False
    return _grade_cached(str(gold), gold, choices) is not None


def judge(text: str, gold: Any, choices: Sequence[str] | None = None) -> bool | None:
    """Correctness of one completion: True / False, or ``None`` when undecidable (ungradable gold
    answer, or a grading timeout). A completion without a final answer is False (if the gold is
    gradable)."""
    g, ch = _gold(gold), _choices(choices)
    pred = extract_answer(text, ch) if text else None
    if pred is None or not str(pred).strip():
        return False if _gold_gradable(g, ch) else None
    return _grade_cached(str(pred), g, ch)


def _judge_all(completions, answer, kwargs) -> tuple[list[str], list[bool | None]]:
    texts = [completion_text(c) for c in completions]
    golds = list(answer) if answer is not None else [None] * len(texts)
    if len(golds) != len(texts):
        raise ValueError(f"{len(golds)} gold answers for {len(texts)} completions")
    choices = _column(kwargs, "choices", len(texts))
    return texts, [judge(t, g, ch) for t, g, ch in zip(texts, golds, choices)]


# ------------------------------------------------------------------------------------ rewards

def correctness(completions, answer, **kwargs) -> list[float | None]:
    """1.0 if the completion's final answer equals the gold answer, else 0.0; ``None`` when the
    gold answer is ungradable (or grading timed out)."""
    _, ok = _judge_all(completions, answer, kwargs)
    return [None if y is None else float(y) for y in ok]


def has_format(text: str) -> bool:
    """A boxed final answer, then (after it) a ``Confidence:`` line with a parsable value.

    The last ``Confidence`` label must come after the last complete box and no box may open after
    it; the label's value must parse (:func:`corea.parsing.parse_confidence`). Anything before the
    answer (reasoning, a pre-filled ``<think>``) does not matter.
    """
    labels = confidence_label_spans(text)
    if not labels:
        return False
    at = labels[-1][0]
    if extract_boxed(text[:at]) is None or _BOX_OPEN.search(text, at) is not None:
        return False
    return parse_confidence(text).value is not None


def format_reward(completions, answer=None, **kwargs) -> list[float]:
    """1.0 if the completion has a boxed final answer and a parsable confidence line after it,
    both written by the model: a completion whose answer or confidence a forced-suffix rollout
    elicited (non-empty ``forced`` column, :mod:`train.rollout`) gets 0.0."""
    forced = _column(kwargs, "forced", len(completions))
    return [1.0 if not f and has_format(completion_text(c)) else 0.0
            for c, f in zip(completions, forced)]


format_reward.__name__ = "format"  # TRL logs rewards/format/mean; __qualname__ keeps pickling


def _all_gather(obj: Any) -> list[Any]:
    """``obj`` from every process (``[obj]`` without a multi-rank process group)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return [obj]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def _group_keys(n: int, kwargs: dict) -> list[str]:
    ids = kwargs.get("id")
    prompts = kwargs.get("prompts", kwargs.get("prompt"))
    if ids is None and prompts is None:
        raise ValueError("group accuracy needs the `prompts` kwarg (TRL passes it) or an `id` "
                         "column to tell which completions share a prompt")
    ids = list(ids) if ids is not None else [None] * n
    prompts = list(prompts) if prompts is not None else [None] * n
    if len(ids) != n or len(prompts) != n:
        raise ValueError(f"`id`/`prompts` lengths ({len(ids)}/{len(prompts)}) differ from the "
                         f"{n} completions")
    keys = []
    for i, p in zip(ids, prompts):
        if i is not None:
            keys.append(f"id:{i}")
        elif p is not None:
            keys.append("prompt:" + json.dumps(p, sort_keys=True, default=str))
        else:
            raise ValueError("a completion has neither an `id` nor a prompt")
    return keys


def group_accuracy(keys: Sequence[str], correct: Sequence[bool | None],
                   gather: Callable[[Any], list[Any]] | None = None) -> list[float | None]:
    """Per completion, the mean correctness of all completions with the same key.

    Args:
        keys: the prompt identity of each local completion.
        correct: its correctness (``None`` = undecided, left out of the mean).
        gather: returns the list of one object per process (default: ``torch.distributed``
            all-gather when there is more than one rank), so groups split across processes are
            complete.

    Returns:
        the group accuracy per local completion, ``None`` when no member of its group is decided.
    """
    pairs = list(zip(keys, [None if y is None else bool(y) for y in correct]))
    everyone = (gather or _all_gather)(pairs)
    tot: dict[str, list[int]] = {}
    for part in everyone:
        for k, y in part:
            if y is not None:
                s = tot.setdefault(k, [0, 0])
                s[0] += int(y)
                s[1] += 1
    return [tot[k][0] / tot[k][1] if k in tot else None for k in keys]


class CalibrationReward:
    """A confidence-calibration reward (picklable; ``__name__`` = ``kind``).

    Args:
        kind: ``confidence_l1`` | ``confidence_l2`` | ``brier`` | ``log_score``.
        eps: probability floor of ``log_score`` (its minimum is ``log(eps)``).
    """

    KINDS = ("confidence_l1", "confidence_l2", "brier", "log_score")

    def __init__(self, kind: str = "confidence_l1", eps: float = EPS):
        if kind not in self.KINDS:
            raise ValueError(f"unknown calibration reward {kind!r}; use one of {self.KINDS}")
        if not 0 < eps < 0.5:
            raise ValueError("eps must be in (0, 0.5)")
        self.kind = kind
        self.eps = float(eps)
        self.__name__ = kind

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "eps": self.eps}

    @property
    def minimum(self) -> float:
        """The reward of a completion without a parsable confidence."""
        return math.log(self.eps) if self.kind == "log_score" else -1.0

    def __repr__(self) -> str:
        return f"CalibrationReward(kind={self.kind!r}, eps={self.eps!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CalibrationReward) and other.params() == self.params()

    def __hash__(self) -> int:
        return hash((self.kind, self.eps))

    def score(self, c: float, target: float, y: bool) -> float:
        """Reward for confidence ``c`` given group accuracy ``target`` and own correctness ``y``."""
        if self.kind == "confidence_l1":
            return -abs(c - target)
        if self.kind == "confidence_l2":
            return -(c - target) ** 2
        if self.kind == "brier":
            return -(c - float(y)) ** 2
        p = c if y else 1.0 - c
        return max(math.log(max(p, self.eps)), math.log(self.eps))

    def __call__(self, completions, answer, **kwargs) -> list[float | None]:
        texts, ok = _judge_all(completions, answer, kwargs)
        if self.kind in ("confidence_l1", "confidence_l2"):
            targets = group_accuracy(_group_keys(len(texts), kwargs), ok)
        else:
            targets = [None if y is None else float(y) for y in ok]
        out: list[float | None] = []
        for text, y, t in zip(texts, ok, targets):
            if y is None or t is None:
                out.append(None)
                continue
            c = parse_confidence(text).value
            out.append(self.minimum if c is None else float(self.score(c, t, y)))
        return out


confidence_l1 = CalibrationReward("confidence_l1")
confidence_l2 = CalibrationReward("confidence_l2")
brier = CalibrationReward("brier")
log_score = CalibrationReward("log_score")


def distinct_chars(completions, answer=None, **kwargs) -> list[float]:
    """DEBUG ONLY (smoke runs): share of distinct characters in the completion (0 when empty).

    It varies between random completions, so a tiny random model whose completions all get the
    same task rewards still has non-zero advantages and the smoke run exercises backward and the
    optimizer step. Never use it for real training."""
    return [len(set(t)) / len(t) if (t := completion_text(c)) else 0.0 for c in completions]


REWARDS: dict[str, Callable] = {
    f.__name__: f
    for f in (correctness, format_reward, confidence_l1, confidence_l2, brier, log_score)
}
"""The rewards by name (= their ``__name__``)."""

DEBUG_REWARDS: dict[str, Callable] = {"distinct_chars": distinct_chars}
"""Rewards for tests and smoke runs only; :func:`get_reward` resolves them too."""

ALIASES = {"calibration": "confidence_l1"}


def reward_names() -> list[str]:
    return list(REWARDS)


def get_reward(name: str, **params) -> Callable:
    """A reward by name.

    Args:
        name: a key of :data:`REWARDS` or :data:`DEBUG_REWARDS`, ``calibration`` (=
            ``confidence_l1``), or a dotted import path ``package.module.attr``.
        **params: parameters of a parameterised reward (``eps`` of the calibration rewards); for
            a dotted path, ``attr(**params)`` is returned.

    Raises:
        KeyError: unknown name. TypeError: parameters for a reward that takes none.
    """
    key = ALIASES.get(name, name)
    r = REWARDS.get(key) or DEBUG_REWARDS.get(key)
    if r is not None:
        if not params:
            return r
        if isinstance(r, CalibrationReward):
            return CalibrationReward(**{**r.params(), **params})
        raise TypeError(f"reward {name!r} takes no parameters (got {sorted(params)})")
    if "." in name:
        module, _, attr = name.rpartition(".")
        obj = getattr(importlib.import_module(module), attr)
        return obj(**params) if params else obj
    raise KeyError(f"unknown reward {name!r}; known: {', '.join([*REWARDS, *DEBUG_REWARDS])}")


# ------------------------------------------------------------------------------------ metrics

def batch_metrics(completions, answer, **kwargs) -> dict[str, float | None]:
    """Calibration metrics of one batch of completions.

    Returns:
        ``accuracy`` (over completions with a decidable grade), ``mean_confidence`` (over
        completions with a parsable confidence), ``no_confidence`` (share of all completions
        without one), ``ece`` (10 equal-width bins) and ``brier`` (over completions with both a
        confidence and a decidable grade, :mod:`corea.metrics`), ``forced_confidence`` (share
        whose confidence a forced-suffix rollout elicited; only with a ``forced`` column) and
        ``n``. An undefined value (nothing to average) is ``None``.
    """
    texts, ok = _judge_all(completions, answer, kwargs)
    forced = _column(kwargs, "forced", len(texts))
    conf = [parse_confidence(t).value for t in texts]
    graded = [y for y in ok if y is not None]
    stated = [c for c in conf if c is not None]
    pairs = [(c, y) for c, y in zip(conf, ok) if c is not None and y is not None]
    cs, ys = [c for c, _ in pairs], [bool(y) for _, y in pairs]
    return {
        "accuracy": sum(graded) / len(graded) if graded else None,
        "mean_confidence": sum(stated) / len(stated) if stated else None,
        "no_confidence": (len(texts) - len(stated)) / len(texts) if texts else None,
        "ece": ece(cs, ys, n_bins=10) if pairs else None,
        "brier": brier_score(cs, ys) if pairs else None,
        "forced_confidence": (sum("confidence" in (f or "") for f in forced) / len(texts)
                              if texts and kwargs.get("forced") is not None else None),
        "n": float(len(texts)),
    }


class WithBatchMetrics:
    """Wraps a reward (same ``__name__``, same output) and logs :func:`batch_metrics` through
    TRL's ``log_metric`` kwarg as ``<prefix><metric>`` on every call. Undefined metrics are not
    logged. Wrap one reward only, so each batch is counted once."""

    def __init__(self, func: Callable, prefix: str = "calibration/"):
        self.func = func
        self.prefix = prefix
        self.__name__ = getattr(func, "__name__", type(func).__name__)

    def __call__(self, completions, answer, **kwargs):
        out = self.func(completions, answer, **kwargs)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            for k, v in batch_metrics(completions, answer, **kwargs).items():
                if k != "n" and v is not None and math.isfinite(v):
                    log_metric(self.prefix + k, float(v))
        return out
