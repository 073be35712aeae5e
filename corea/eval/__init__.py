"""Evaluation: score a benchmark once with both models, then study any threshold τ offline.

``runs`` (run folders: files, lock, resume), ``harness`` (scoring both models per item),
``samples`` (sampled SLM solutions), ``summary`` (metrics and their table), ``scored`` (the scored
set: the one vectorised deferral rule), ``thresholds`` (τ rules), ``compare`` / ``deciders`` /
``heldout`` (deferral signals side by side, as plug-ins, held out), ``beforeafter``, ``report``,
``charts``, ``calibrate`` (calibrator refit). The command lines are in :mod:`corea.cli`.
"""
