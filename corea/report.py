"""Alias for one release: ``python -m corea.report ...`` runs ``corea report ...``
(:mod:`corea.cli.report`; the library is :mod:`corea.eval.report`)."""

if __name__ == "__main__":  # pragma: no cover
    import sys

    from corea.cli import alias

    sys.exit(alias("report"))
