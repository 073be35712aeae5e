"""Alias for one release: ``python -m corea.evaluate ...`` runs ``corea evaluate ...``
(:mod:`corea.cli.evaluate`; the harness is :mod:`corea.eval`)."""

if __name__ == "__main__":  # pragma: no cover
    import sys

    from corea.cli import alias

    sys.exit(alias("evaluate"))
