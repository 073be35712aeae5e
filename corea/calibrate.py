"""Alias for one release: ``python -m corea.calibrate ...`` runs ``corea calibrate ...``
(:mod:`corea.cli.calibrate`; the library is :mod:`corea.eval.calibrate`)."""

if __name__ == "__main__":  # pragma: no cover
    import sys

    from corea.cli import alias

    sys.exit(alias("calibrate"))
