"""Evaluation: score a benchmark once with both models, then study any threshold τ offline.

``runs`` (run folders), ``harness`` (scoring), ``summary`` (metrics and their table).
"""
