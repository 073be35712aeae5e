"""Alias for one release: ``python -m corea.beforeafter ...`` runs ``corea beforeafter ...``
(:mod:`corea.cli.beforeafter`; the library is :mod:`corea.eval.beforeafter`)."""

if __name__ == "__main__":  # pragma: no cover
    import sys

    from corea.cli import alias

    sys.exit(alias("beforeafter"))
