"""LoRA adapters shipped with COREA for an embedded SLM (``corea/assets/adapters/<slm>/``).

A shipped adapter is a PEFT LoRA folder (``adapter_config.json`` whose base is ``embedded:slm``,
``adapter_model.safetensors``) with a ``card.json`` (name, version, data, steps, held-out metrics,
command) and a ``README.md``. It runs on llama.cpp as trained checkpoints do: the unchanged
quantized GGUF plus the adapter applied at run time (:mod:`corea.backends.lora_gguf`).

An adapter trained with ``adapter_scope: confidence`` (:data:`SCOPES`, recorded in
:data:`SCOPE_FILE`) runs only on the confidence line after the base model's solution; the
shipped one is such an adapter, so the SLM's solutions — and its token probabilities and hidden
states — stay the base model's, and only the stated confidence changes.

The settings name it by a symbolic model id, :data:`CALIBRATED_SLM` (``embedded:slm+calibration``),
so run identities and logs do not carry a machine's install path; :func:`resolve_adapter` turns
that id into the folder. :class:`corea.config.Settings` swaps the plain embedded SLM for it when
``use_shipped_adapter`` is on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .shipped import ASSETS, slug

SHIPPED = ASSETS / "adapters"
CALIBRATED_SLM = "embedded:slm+calibration"
"""Model id of the embedded SLM with its shipped calibration adapter."""
EMBEDDED_SLM_NAME = "Qwen2.5-Coder-0.5B-Instruct"
CARD = "card.json"
SCOPE_FILE = "corea_adapter.json"
"""Written next to ``adapter_config.json`` by :mod:`train.confidence`: ``{"scope": ...}``."""
SCOPES = ("all", "confidence")
"""Where an adapter applies: ``all`` — every token (a plain LoRA checkpoint); ``confidence`` —
only the confidence line the SLM writes after its solution: the solution is the base model's, in
the KV cache as the base computed it, and the adapter is switched on from the solution's last
token (the idea of Activated LoRA, Greenewald et al. 2025, arXiv:2504.12397, with the switch at
the end of the solution instead of after invocation tokens). Training matches it
(``train.confidence``, ``adapter_scope: confidence``)."""


def shipped_adapter_dir(base_name: str = EMBEDDED_SLM_NAME) -> Path | None:
    """The shipped adapter folder for the SLM named ``base_name``, or None when none ships."""
    d = SHIPPED / slug(base_name)
    return d if (d / "adapter_config.json").is_file() and (d / CARD).is_file() else None


def adapter_card(adapter_dir: str | os.PathLike[str]) -> dict:
    """The adapter's ``card.json`` (empty when it has none or it is unreadable)."""
    try:
        card = json.loads((Path(adapter_dir) / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def adapter_scope(adapter_dir: str | os.PathLike[str]) -> str:
    """Where the adapter in ``adapter_dir`` applies (one of :data:`SCOPES`); ``all`` when the
    folder has no :data:`SCOPE_FILE` (checkpoints of ``train.grpo``, older adapters).

    Raises:
        ValueError: the file names an unknown scope."""
    try:
        rec = json.loads((Path(adapter_dir) / SCOPE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "all"
    scope = rec.get("scope", "all") if isinstance(rec, dict) else "all"
    if scope not in SCOPES:
        raise ValueError(f"{adapter_dir}/{SCOPE_FILE}: scope must be one of {SCOPES}, "
                         f"got {scope!r}")
    return scope


def write_adapter_scope(adapter_dir: str | os.PathLike[str], scope: str) -> None:
    """Write :data:`SCOPE_FILE` into ``adapter_dir``.

    Raises:
        ValueError: ``scope`` is not one of :data:`SCOPES`."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    d = Path(adapter_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / SCOPE_FILE).write_text(json.dumps({"scope": scope}) + "\n", encoding="utf-8")


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
