"""``corea llm-states``: add the LLM's state after its own prompt to a run folder (one prefill each).

    COREA_LLM__N_THREADS=1 corea llm-states data/generations/gsm8k-train-1000 [--limit 602]

For every item whose LLM has answered (the first ``--limit`` of them), the run's LLM prefills the
answer prompt it solved from and its final-layer hidden state after it is appended to
``<run_dir>/llm_states.jsonl`` (:mod:`corea.eval.llm_states`); nothing is generated. Resumable:
rerun the same command to continue, then ``corea pack <run_dir>`` and commit
``llm_states.jsonl.gz``. The LLM comes from the settings (``--config``, ``COREA_LLM__*``) and
must be the run's; its hidden-state reading is turned on here.

Exit status: 0 done, 1 interrupted (lines written so far are kept), 2 bad input (no run, another
LLM, the folder locked by another process, an engine that reads no states).
"""

from __future__ import annotations

import argparse

HELP = "add the LLM's hidden state after its prompt (one prefill per item) to a run folder"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea llm-states`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(prog="corea llm-states", description=HELP)
    p.add_argument("run_dir", metavar="RUN_DIR", help="an evaluation run folder")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N items that have an LLM grade")
    p.add_argument("--config", default=None, help="YAML settings file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Read the states (exit status as in the module docstring)."""
    from ..eval.llm_states import score_llm_states
    from ..eval.runs import LLM_STATES_FILE
    from .llm_side import score_with_llm

    report, status = score_with_llm(
        args, LLM_STATES_FILE, lambda backend: score_llm_states(
            args.run_dir, backend, args.limit, progress=not args.no_progress),
        hidden_states=True)
    if report is None:
        return status
    print(f"{args.run_dir}/{LLM_STATES_FILE}: {report.scored} read now, {report.total} lines, "
          f"{report.failed} failed, {report.mismatched} with another prompt size than the "
          f"run's LLM prompt")
    return 0
