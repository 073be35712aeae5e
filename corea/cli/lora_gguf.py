"""``corea lora-gguf ADAPTER...``: convert PEFT LoRA checkpoints to llama.cpp's LoRA GGUF once
(:func:`corea.backends.lora_gguf.lora_gguf`) and print each file's path.

Exit status: 0 done, 2 an adapter that cannot be converted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

HELP = "convert PEFT LoRA checkpoints to llama.cpp's LoRA GGUF"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea lora-gguf`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(prog="corea lora-gguf", description=HELP)
    p.add_argument("adapters", nargs="+", help="PEFT LoRA checkpoint folders")
    p.add_argument("--arch", default=None, help="gguf architecture of the base model "
                   "(default: the base folder's model_type)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``corea lora-gguf`` with these arguments."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Convert each adapter (exit status as in the module docstring)."""
    from ..backends.lora_gguf import base_gguf, gguf_architecture, lora_gguf
    from ..config import Settings

    cache_dir = Settings().cache_dir
    status = 0
    for a in args.adapters:
        try:
            arch = args.arch or gguf_architecture(base_gguf(a, cache_dir))
            print(lora_gguf(a, arch, cache_dir))
        except (OSError, ValueError) as exc:
            print(f"error: {a}: {exc}", file=sys.stderr)
            status = 2
    return status
