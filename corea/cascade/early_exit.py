"""Early exit: a deciding tier stopped while it writes, when a probe on its state predicts failure.

A tier with an :class:`EarlyExit` (``early_exit:`` in its settings,
:class:`corea.model_config.EarlyExitSettings`) solving by chain of thought reads, every ``k``
tokens of its decode, the final-layer hidden state the engine attaches to the stream
(:attr:`corea.backends.base.Chunk.states` ``end``: the state after the tokens written so far but
the last, :mod:`corea.backends.llamacpp_states`) — no second pass. A checkpoint probe
(:mod:`corea.signals.checkpoint_probe`) turns it into P(the tier's answer will be right); below
τ_e the tier's stream ends there (the engine stops), its partial reasoning stays in its output
and on screen, and the question goes to the next tier with decision reason ``early_exit``
(:data:`EARLY_EXIT`; the probe value, τ_e and the token count in the message). At or above τ_e
at every checkpoint the tier writes to its end and decides answer-first as usual.

A read or probe that fails never stops an answer: the tier writes on, no later checkpoint is
read, and :attr:`ExitWatch.note` says why (shown beside its decision). A chunk without states
(an engine that reads none) is simply not checked. A tier whose τ is 0 (keep every usable
answer) is not stopped either, as with routing (:mod:`corea.cascade.route`). Held out against
answer-first and route-first: :mod:`corea.eval.early_exit`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..backends.base import Chunk, StreamCount
from ..events import EARLY_EXIT, DecisionInfo
from ..policy import check_threshold, shown

__all__ = ["EARLY_EXIT", "EarlyExit", "ExitWatch", "exit_early", "exit_decision",
           "shipped_exit_probe_dir", "load_early_exit", "slm_early_exit"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EarlyExit:
    """A tier's early exit: a checkpoint probe
    (:class:`corea.signals.checkpoint_probe.CheckpointProbe`), ``k`` (tokens between two reads)
    and τ_e in [0, 1].

    Raises:
        ValueError: ``k`` < 1 or τ_e outside [0, 1].
    """

    probe: Any
    k: int
    threshold: float
    signal: str = EARLY_EXIT

    def __post_init__(self):
        if int(self.k) < 1:
            raise ValueError("early exit: k must be at least 1 token")
        check_threshold(self.threshold, "early-exit threshold")


@dataclass
class ExitWatch:
    """What early exit saw in one decode: the last probe ``value`` read and the position ``t``
    it was read at (tokens), ``checks`` made, whether it ``fired``, the ``tokens`` written when
    it fired, and ``note``: why it stopped reading (a failed read or probe)."""

    exit: EarlyExit
    value: float | None = None
    t: int | None = None
    checks: int = 0
    fired: bool = False
    tokens: int = 0
    note: str | None = None


def _read(watch: ExitWatch, state, t: int) -> bool:
    """Read the probe at position ``t``; True when the decode must stop. A failure is noted and
    ends the checking (never the answer)."""
    try:
        value = float(watch.exit.probe.confidence(state, t))
    except Exception as exc:  # noqa: BLE001 — a probe that fails must not stop answers
        watch.note = f"no early exit: reading its state after {t} tokens failed " \
                     f"({type(exc).__name__})"
        return False
    watch.value, watch.t, watch.checks = value, t, watch.checks + 1
    return value < watch.exit.threshold


def exit_early(chunks: Iterator[Chunk], watch: ExitWatch) -> Iterator[Chunk]:
    """Pass ``chunks`` through, reading the probe on the chunk's ``end`` state each time the
    tokens written reach the next multiple of ``k``; when it fires, close the stream (the
    engine stops) and end with a chunk of finish reason :data:`EARLY_EXIT` whose
    :class:`~corea.backends.base.Usage` is the prompt the engine announced and the tokens
    written (log-probability pairs seen, else one per text chunk). ``watch`` records what
    happened."""
    k = int(watch.exit.k)
    count = StreamCount()
    due = k  # the next position to read at
    try:
        for ch in chunks:
            count.add(ch)
            yield ch
            written = count.written
            state = (ch.states or {}).get("end")
            t = written - 1  # the chunk's state was read after all its tokens but the last
            if watch.note is not None or state is None or t < due or ch.finish_reason:
                continue
            due = (t // k + 1) * k
            if _read(watch, state, t):
                watch.fired, watch.tokens = True, written
                yield Chunk(usage=count.usage(), finish_reason=EARLY_EXIT)
                return
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def exit_decision(watch: ExitWatch, who: str | None, to: str | None) -> DecisionInfo:
    """The decision of a decode stopped early: deferred, reason ``early_exit``, the probe value
    against τ_e, and the message the visitor reads."""
    v, t = watch.value, watch.exit.threshold
    who_, to_ = who or "the small model", to or "the large model"
    msg = (f"Stopped early and sent to {to_} — after {who_} had written {watch.tokens} tokens, "
           f"a probe on its state put its chance of answering right at "
           f"{shown(v, t, percent=True)}, below the early-exit threshold "
           f"{shown(t, v, percent=True)}; its reasoning so far is kept above")
    return DecisionInfo(True, EARLY_EXIT, v, t, msg, watch.exit.signal)


def shipped_exit_probe_dir(model: str) -> Path | None:
    """The checkpoint probe shipped for ``model`` (``corea/assets/probes/<model>/checkpoints/``),
    or None when none ships."""
    from ..shipped import slug
    from ..signals.probe import SHIPPED

    d = SHIPPED / slug(model) / "checkpoints"
    return d if (d / "card.json").is_file() else None


def load_early_exit(settings, model: str, base: str | None = None) -> EarlyExit | None:
    """The :class:`EarlyExit` of a tier's ``early_exit`` settings
    (:class:`corea.model_config.EarlyExitSettings`) for the model named ``model``: its ``probe``
    folder, else the one shipped for ``model`` (or, ``base`` given, for ``base``: the model whose
    states ``model`` decodes with, as for :func:`corea.cascade.route.load_router`); None when
    ``settings`` is None or no probe is found.

    Raises:
        OSError, ValueError: the probe cannot be read or was fit for another model.
    """
    if settings is None:
        return None
    from ..signals.checkpoint_probe import CheckpointProbe

    owners = [model] if settings.probe else [model, *([base] if base else [])]
    folder = Path(settings.probe).expanduser() if settings.probe else next(
        (d for d in map(shipped_exit_probe_dir, owners) if d is not None), None)
    if folder is None:
        return None
    probe = CheckpointProbe.load(folder)
    if probe.card.slm not in owners:
        raise ValueError(f"the checkpoint probe at {folder} was fit for {probe.card.slm}, "
                         f"not {model}")
    return EarlyExit(probe, settings.k or probe.card.k, settings.threshold)


def slm_early_exit(settings) -> EarlyExit | None:
    """The first tier's :class:`EarlyExit` from the app's settings (:class:`corea.config.Settings`):
    ``slm.early_exit`` with its probe folder, or the shipped probe when
    ``use_shipped_signals``; for the SLM with the shipped calibration adapter the base model's
    probe (the adapter only writes the confidence line). None when off or no probe is found;
    a probe that cannot be read is logged and ignored (the SLM then writes to its end). Never
    raises."""
    ee = settings.slm.early_exit
    if ee is None or not (ee.probe or settings.use_shipped_signals):
        return None
    from ..adapters import CALIBRATED_SLM, EMBEDDED_SLM_NAME

    base = EMBEDDED_SLM_NAME if settings.slm.model == CALIBRATED_SLM else None
    try:
        found = load_early_exit(ee, settings.slm.name, base)
    except Exception:  # noqa: BLE001 — a broken artifact must not stop answers
        log.exception("could not load the checkpoint probe; early exit is off")
        return None
    if found is None:
        log.warning("early exit is set but no checkpoint probe is shipped for %s; it is off "
                    "(make one with `corea early-exit --probe-out DIR` and set "
                    "slm.early_exit.probe)", settings.slm.name)
    return found
