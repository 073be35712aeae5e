"""What the LLM side-file commands share (``corea llm-states``, ``corea llm-verify``): the run's
LLM from the settings, one read per item into a run folder's side file, and one way to report
bad input and interruption.

Exit status: 0 done, 1 interrupted (lines written so far are kept), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, TypeVar

R = TypeVar("R")


def score_with_llm(args: argparse.Namespace, file_name: str, score: Callable[[object], R],
                   hidden_states: bool = False) -> tuple[R | None, int]:
    """``(score(backend), 0)`` for the settings' LLM (``args.config``; its hidden-state reading
    on with ``hidden_states``), or ``(None, exit status)`` after printing why: ``--limit``
    below 1, a missing or locked run, another LLM, an engine that cannot do the read (2), or
    Ctrl-C (1; the lines in ``args.run_dir/file_name`` so far are kept)."""
    from ..backends import BackendError, make_backend
    from ..config import load_settings

    if args.limit is not None and args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return None, 2
    settings = load_settings(args.config)
    ms = settings.llm.model_copy(update={"hidden_states": True}) if hidden_states \
        else settings.llm
    try:
        return score(make_backend(ms, settings.cache_dir)), 0
    except KeyboardInterrupt:
        print(f"\ninterrupted: completed lines are saved in {args.run_dir}/{file_name}",
              file=sys.stderr)
        return None, 1
    except (FileNotFoundError, ValueError, RuntimeError, BackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 2
