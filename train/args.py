"""The arguments both trainers share (:mod:`train.grpo`, :mod:`train.confidence`).

Each trainer's dataclass extends :class:`TrainerArguments` with its own fields; TRL's
``TrlParser`` reads them from a recipe (``train/recipes/*.yaml``) and the command line by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_CACHE_DIR = "~/.cache/corea"


def default_cache_dir() -> str:
    """``$COREA_CACHE_DIR`` when set, else ``~/.cache/corea`` (the default of
    :attr:`corea.config.Settings.cache_dir`), unexpanded."""
    return os.environ.get("COREA_CACHE_DIR") or DEFAULT_CACHE_DIR


@dataclass
class TrainerArguments:
    """Fields every trainer has.

    Attributes:
        model: the model to train: ``embedded:slm`` (the embedded SLM, converted once to a
            cached checkpoint), ``tiny-random``, a hub id or a local folder.
        limit: keep at most this many training questions (None: all).
        corea_cache_dir: where embedded weights and converted checkpoints are cached (default
            ``$COREA_CACHE_DIR``, else ``~/.cache/corea``).
        trainer: the module a recipe runs (read by the app's job manager); each trainer sets its
            own default.
    """

    model: str = field(default="embedded:slm", metadata={
        "help": "'embedded:slm' | 'tiny-random' | a hub id | a local model folder"})
    limit: int | None = field(default=None, metadata={
        "help": "keep at most this many training questions"})
    corea_cache_dir: str = field(default_factory=default_cache_dir, metadata={
        "help": "where embedded weights and converted checkpoints are cached "
                "(default: $COREA_CACHE_DIR, else ~/.cache/corea)"})
    trainer: str = field(default="", metadata={
        "help": "the module a recipe runs (read by the app's job manager)"})
