"""Where the artifacts that ship with the package live: ``corea/assets/<kind>/<slug(slm)>/``.

One folder per SLM name and kind (``adapters``, ``calibrators``, ``probes``), each with a card
(data, date, held-out metrics, the command that regenerates it). The loaders live with the
artifacts' code (:mod:`corea.adapters`, :mod:`corea.signals.calibrator`, :mod:`corea.signals.probe`); this module
only names the folders, so that they agree.
"""

from __future__ import annotations

import re
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
"""The package's ``assets/`` folder."""


def slug(name: str) -> str:
    """A folder name for a model name: lower case, runs of other characters as ``-``
    (``"Qwen2.5-Coder-0.5B-Instruct"`` → ``"qwen2.5-coder-0.5b-instruct"``)."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.") or "model"


def asset_dir(kind: str, slm: str) -> Path:
    """``assets/<kind>/<slug(slm)>``, whether or not it exists."""
    return ASSETS / kind / slug(slm)
