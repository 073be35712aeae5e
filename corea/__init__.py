"""COREA — COllaborative REAsoner: a small LM answers with a verbalized confidence and defers to a
large LM below a threshold τ. See README.md."""

__version__ = "0.1.0"
