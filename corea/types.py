"""Plain shared types: the chat :class:`Message` and the sampling :class:`GenerationParams`.

They sit at the bottom of the house: configuration, prompts, the engines and the cascade all use
them, and this module imports nothing of COREA's.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Literal

__all__ = ["Role", "Message", "GenerationParams", "SolveMode", "SOLVE_MODES", "check_solve"]

Role = Literal["system", "user", "assistant"]

SolveMode = Literal["cot", "pot", "mot"]
"""How a tier solves: ``cot`` reasons in text (chain of thought), ``pot`` writes a Python program
that the sandbox runs (program of thought), ``mot`` does both and records whether they agree
(mixture of thought). The functions are :data:`corea.cascade.SOLVERS`."""

SOLVE_MODES: tuple[str, ...] = ("cot", "pot", "mot")


def check_solve(mode: object, name: str = "solve") -> str:
    """The one check of a solve mode (the settings' ``--solve``, the service, the API's
    ``corea.solve``, the Ask tab's "Solve by"): ``mode`` must be one of :data:`SOLVE_MODES`.

    Args:
        mode: the value to check (any type: it may come from a stranger's request).
        name: what to call it in the message (e.g. ``"corea.solve"``).

    Returns:
        ``mode``, a string of :data:`SOLVE_MODES`.

    Raises:
        ValueError: any other value; the message names ``name`` and the value (a long one cut
            short by :func:`reprlib.repr`).
    """
    if not isinstance(mode, str) or mode not in SOLVE_MODES:
        raise ValueError(f"{name} must be one of {', '.join(SOLVE_MODES)}, got "
                         f"{reprlib.repr(mode)}")
    return mode


@dataclass(frozen=True)
class Message:
    """One chat message. ``role`` is ``system``, ``user`` or ``assistant``; ``content`` is text."""

    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters for one generation.

    Attributes:
        max_new_tokens: upper bound on generated tokens (tokens, > 0).
        temperature: 0.0 means greedy decoding (the default, for reproducible answers).
        top_p: nucleus-sampling mass in (0, 1]; ignored when greedy.
        stop: strings that end generation (not included in the output).
        seed: sampling seed, where the engine supports one.
        draft_hint: text the answer is likely to repeat in part (the cascade passes the small
            model's solution when it defers): with ``speculative: slm_lookup`` set on the model,
            the llama.cpp backend drafts tokens by lookup in it and verifies them, which changes
            only how many forward passes a greedy answer takes, not the answer
            (:mod:`corea.backends.speculative`). Other engines, sampled decoding and llama.cpp's
            batched context (``n_parallel`` > 1 or ``hidden_states``) ignore it. ``None``: no
            hint.
        top_logprobs: how many most likely alternatives (token text, natural-log probability)
            to report at each generated token, in :attr:`corea.backends.base.Chunk.top_logprobs`
            (0: none). The cascade asks for them on a confidence line, to read the stated
            confidence as a distribution (:mod:`corea.signals.stated`); engines that cannot report
            them (transformers, vLLM here) ignore it.
    """

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = 0
    draft_hint: str | None = None
    top_logprobs: int = 0
