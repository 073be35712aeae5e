"""The interface of one deciding signal, and the inputs a signal can need.

A deciding signal is the number a tier compares with its τ (higher = more likely correct, so
keep the answer). Every signal is one :class:`Signal` entry in :mod:`corea.signals.registry`; the
live cascade (:mod:`corea.cascade.deciding`), the held-out report (:mod:`corea.eval.heldout`), the
signal comparison (:mod:`corea.eval.compare`) and the explorer (:mod:`corea.ui.explorer`) read it
from there.

Offline a signal turns evaluation rows (``items.jsonl`` rows: ``slm``, ``slm_verify``,
``slm_samples``, ``slm_prior``, grades) into one confidence per row in [0, 1], or ``None`` where
it cannot be computed; a learned one is first :attr:`Signal.fit` on **train** rows. Live, a signal
with a :attr:`Signal.setting` is chosen by ``confidence_source`` and computed from one tier's
:class:`corea.events.ModelOutput` by :attr:`Signal.live`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from .calibrator import has_token_signals


def slm_of(row: dict) -> dict:
    """The SLM's output dict of an evaluation row (``{}`` when it has none)."""
    return row.get("slm") or {}


def has_samples(k: int) -> Callable[[dict], bool]:
    """``row -> bool``: the row carries at least ``k`` sampled SLM solutions."""
    return lambda row: len(row.get("slm_samples") or []) >= k


INPUTS: dict[str, Callable[[dict], bool]] = {
    "logprobs": lambda row: has_token_signals(slm_of(row)),
    "states": lambda row: bool(slm_of(row).get("states")),
    "verify": lambda row: bool(row.get("slm_verify")),
    "samples2": has_samples(2),
    "samples4": has_samples(4),
    "mot": lambda row: slm_of(row).get("agreement") is not None,
    "prior": lambda row: (row.get("slm_prior") or {}).get("confidence") is not None,
    "llm_states": lambda row: bool(((row.get("llm") or {}).get("states") or {}).get("prompt")),
    "llm_verify": lambda row: (row.get("llm_verify") or {}).get("p_true") is not None,
    "checkpoints": lambda row: bool(row.get("slm_checkpoints")),
}
"""What a row (or a tier's output) may need for a signal, by key: the engine's token
log-probabilities, the SLM's hidden states (``--hidden-states``), the self-verification turn
(``--verify``), 2 or 4 sampled solutions (``--samples``), both a CoT and a program solution
(``solve: mot``), the confidence stated before solving (``--confidence-first``), the LLM's state
after its own prompt (``corea llm-states``), the LLM's P(True) on the SLM's answer
(``corea llm-verify``), the states every k tokens of the solution
(``corea checkpoints``, attached as ``slm_checkpoints`` by
:func:`corea.eval.checkpoints.attach_checkpoints`). Each value says whether one row carries it."""

WHEN = ("after", "before", "during", "oracle")
"""When a signal decides: after the tier solved, before it solves (its solution is saved on the
items it defers), while it writes (early exit: part of its solution is saved; the per-signal
reports charge the whole solution, :mod:`corea.eval.early_exit` the part written), or an
``oracle`` that reads the grades (a bound, not a signal)."""


@dataclass(frozen=True)
class Live:
    """How a signal decides live, from one deciding tier's output.

    Attributes:
        value: ``f(out, opts) -> confidence in [0, 1] or None``; ``out`` is a
            :class:`corea.events.ModelOutput`, ``opts`` the tier's
            :class:`corea.cascade.plan.TierOptions` (its ``calibrator`` and ``probe``).
        missing: ``f(out, opts, engine) -> str or None``: why this output lacks the signal's
            inputs, in words (``engine`` names the tier's engine), or None when it has them;
            then the tier decides with its stated confidence and says why.
        what: the signal's computing part in words for a failure note ("the calibrator").
    """

    value: Callable[[object, object], float | None]
    missing: Callable[[object, object, str], str | None] = lambda out, opts, engine: None
    what: str = "the signal"


@dataclass(frozen=True)
class Signal:
    """One deciding signal (an entry of :data:`corea.signals.registry.SIGNALS`).

    Attributes:
        name: registry key, the name in ``corea heldout``, the explorer and reports.
        label: what it is, in plain words (reports, the explorer's menu).
        when: one of :data:`WHEN`.
        score: ``f(rows, fitted) -> [confidence or None per row]`` (offline).
        fit: ``f(train_rows, slm_name) -> fitted`` for a learned signal, else None.
        needs: keys of :data:`INPUTS` a row needs (all of them, on the same row) for the signal
            to be offered on a set of rows (:func:`corea.signals.registry.available`).
        needs_llm: its label (or value) involves the LLM's grade ("the LLM fixes it"), so only
            rows where the LLM has run can fit or score it.
        extra_tokens: ``f(row) -> (prompt, completion)`` SLM tokens spent on the signal itself.
        llm_prefill: the signal reads the LLM's state after its prompt: one LLM prefill (the
            row's LLM prompt tokens, at the LLM's prices and in its time), charged on the
            questions the LLM does not answer (on the others it is the start of its answer).
        llm_call: ``f(row) -> prompt tokens`` of one more LLM call with no completion that the
            signal makes on **every** item (its prompt is not the LLM's answer prompt, so a
            deferred item pays it too): charged at the LLM's input price and, in seconds, as
            the time model's LLM call; None: no such call.
        covers: ``f(row) -> bool``: whether a report measures the signal on this row (e.g.
            self-consistency on the items a run drew samples for); a report says how many.
        setting: the ``confidence_source`` value that makes it decide live (also the signal a
            live decision records), or None: offline only.
        live: how it is computed live (:class:`Live`); with ``setting``.
        word: its number in a decision message ("token-probability confidence").
        plain: its number in plain words for a visitor ("how sure the small model is,
            calibrated on past answers"): the app's one name of a turn's deciding confidence on
            the badge, the card, the details line and the models panel
            (:func:`corea.signals.registry.plain`); empty: ``"<setting> confidence"``.
    """

    name: str
    label: str
    when: str
    score: Callable[[Sequence[dict], object], list]
    fit: Callable[[Sequence[dict], str], object] | None = None
    needs: tuple[str, ...] = ()
    needs_llm: bool = False
    extra_tokens: Callable[[dict], tuple[int, int]] = lambda row: (0, 0)
    llm_prefill: bool = False
    llm_call: Callable[[dict], int] | None = None
    covers: Callable[[dict], bool] = lambda row: True
    setting: str | None = None
    live: Live | None = None
    word: str = "confidence"
    plain: str = ""

    def __post_init__(self):
        if self.when not in WHEN:
            raise ValueError(f"{self.name}: when must be one of {WHEN}, got {self.when!r}")
        unknown = [n for n in self.needs if n not in INPUTS]
        if unknown:
            raise ValueError(f"{self.name}: unknown inputs {unknown} (known: {sorted(INPUTS)})")
        if (self.setting is None) != (self.live is None):
            raise ValueError(f"{self.name}: a live signal needs both a setting and a live part")

    @property
    def learned(self) -> bool:
        return self.fit is not None

    def carried_by(self, row: dict) -> bool:
        """Whether ``row`` carries every input the signal needs."""
        return all(INPUTS[n](row) for n in self.needs)

    def values(self, rows: Sequence[dict], fitted=None) -> list[float | None]:
        """The confidence per row, clipped to [0, 1] (``fitted``: what :attr:`fit` returned,
        for learned ones).

        Raises:
            ValueError: a learned signal without ``fitted``.
        """
        if self.learned and fitted is None:
            raise ValueError(f"{self.name} is learned: fit it on train rows first")
        return [None if v is None else float(min(1.0, max(0.0, v)))
                for v in self.score(rows, fitted)]
