"""``corea llm-verify``: add the LLM's P(True) on the SLM's answer to a run folder (one prefill each).

    COREA_LLM__N_THREADS=1 corea llm-verify data/generations/gsm8k-test-200 [--limit 200] \
        [--context answer|solution]

For every item whose SLM gave an answer and whose LLM has a grade (the first ``--limit`` of
them), the run's LLM is asked whether the SLM's final answer is correct (``--context answer``:
the question and that answer; ``solution``: the SLM's whole solution too) and P("Yes") against
P("No") as its next token is appended to ``<run_dir>/llm_verify.jsonl``
(:mod:`corea.eval.llm_verify`); nothing is generated. Resumable: rerun the same command to
continue, then ``corea pack <run_dir>`` and commit ``llm_verify.jsonl.gz``. The LLM comes from
the settings (``--config``, ``COREA_LLM__*``) and must be the run's. The signal it feeds is
``llm_p_true`` (``corea heldout --signals llm_p_true``).

Exit status: 0 done, 1 interrupted (lines written so far are kept), 2 bad input (no run, another
LLM, another context than the file's, the folder locked by another process, an engine that
scores no next tokens).
"""

from __future__ import annotations

import argparse
import sys

HELP = "add the LLM's P(True) on the SLM's answer (one prefill per item) to a run folder"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea llm-verify`` (added to ``p`` when given)."""
    from ..prompts import LLM_VERIFY_CONTEXTS

    p = p or argparse.ArgumentParser(prog="corea llm-verify", description=HELP)
    p.add_argument("run_dir", metavar="RUN_DIR", help="an evaluation run folder")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N items with an SLM answer and an LLM grade")
    p.add_argument("--context", choices=LLM_VERIFY_CONTEXTS, default="answer",
                   help="what the LLM reads besides the question: the SLM's final answer "
                        "(default, cheap) or its whole solution")
    p.add_argument("--config", default=None, help="YAML settings file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Read P(True) (exit status as in the module docstring)."""
    from ..backends import BackendError
    from ..eval.llm_verify import score_llm_verify
    from ..eval.runs import LLM_VERIFY_FILE
    from .llm_side import score_with_llm

    def score(backend):
        if getattr(backend, "next_token_logprobs", None) is None:
            raise BackendError("unsupported", f"the {type(backend).__name__} engine scores no "
                                              "next tokens; use llama.cpp")
        return score_llm_verify(args.run_dir, backend, args.limit, args.context,
                                progress=not args.no_progress)

    report, status = score_with_llm(args, LLM_VERIFY_FILE, score)
    if report is None:
        return status
    print(f"{args.run_dir}/{LLM_VERIFY_FILE}: {report.scored} read now, {report.total} lines, "
          f"{report.failed} failed")
    if report.total and report.failed == report.total:
        print("error: every read failed (each line's error says why)", file=sys.stderr)
        return 2
    return 0
