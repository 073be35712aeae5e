"""LoRA adapters shipped with COREA for an embedded SLM (``corea/assets/adapters/<slm>/``).

A shipped adapter is a PEFT LoRA folder (``adapter_config.json`` whose base is ``embedded:slm``,
``adapter_model.safetensors``) with a ``card.json`` (name, version, data, steps, held-out metrics,
command) and a ``README.md``. It runs on llama.cpp as trained checkpoints do: the unchanged
quantized GGUF plus the adapter applied at run time (:mod:`corea.backends.lora_gguf`).

The settings name it by a symbolic model id, :data:`CALIBRATED_SLM` (``embedded:slm+calibration``),
so run identities and logs do not carry a machine's install path; :func:`resolve_adapter` turns
that id into the folder. :class:`corea.config.Settings` swaps the plain embedded SLM for it when
``use_shipped_adapter`` is on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SHIPPED = Path(__file__).parent / "assets" / "adapters"
CALIBRATED_SLM = "embedded:slm+calibration"
"""Model id of the embedded SLM with its shipped calibration adapter."""
EMBEDDED_SLM_NAME = "Qwen2.5-Coder-0.5B-Instruct"
CARD = "card.json"


def shipped_adapter_dir(base_name: str = EMBEDDED_SLM_NAME) -> Path | None:
    """The shipped adapter folder for the SLM named ``base_name``, or None when none ships."""
    from .probe import slug

    d = SHIPPED / slug(base_name)
    return d if (d / "adapter_config.json").is_file() and (d / CARD).is_file() else None


def adapter_card(adapter_dir: str | os.PathLike[str]) -> dict:
    """The adapter's ``card.json`` (empty when it has none or it is unreadable)."""
    try:
        card = json.loads((Path(adapter_dir) / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def resolve_adapter(model: str | os.PathLike[str]) -> Path:
    """The folder a model id names: the shipped adapter for :data:`CALIBRATED_SLM`, else the path.

    Raises:
        FileNotFoundError: :data:`CALIBRATED_SLM` and no adapter ships with this install.
    """
    if str(model) == CALIBRATED_SLM:
        d = shipped_adapter_dir()
        if d is None:
            raise FileNotFoundError(f"no calibration adapter ships for {EMBEDDED_SLM_NAME} in "
                                    f"this install ({SHIPPED})")
        return d
    return Path(model).expanduser()


def calibrated_name() -> str:
    """Display name of :data:`CALIBRATED_SLM`: ``"<SLM> + <adapter name>"`` from the card."""
    d = shipped_adapter_dir()
    name = adapter_card(d).get("name") if d is not None else None
    return f"{EMBEDDED_SLM_NAME} + {name or 'COREA calibration adapter'}"
