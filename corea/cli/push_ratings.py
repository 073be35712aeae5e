"""``corea push-ratings``: push the log's rated turns to the Hugging Face dataset repository
``COREA_HUB_DATASET`` now (:mod:`corea.export.hub`), or write them locally with ``--dry-run``.

    corea push-ratings [--dataset OWNER/NAME] [--db-url URL] [--endpoint URL] [--public]
    corea push-ratings --dry-run OUT_DIR

The write token is read from ``COREA_HUB_TOKEN`` or ``HF_TOKEN``. Only rated turns are pushed,
never a visitor's identity (:mod:`corea.export.records`); a rating already in the repository is
not pushed again. ``--dry-run`` writes ``OUT_DIR/README.md`` (the dataset card) and
``OUT_DIR/data/*.parquet`` (every rated turn) and contacts nothing.

Exit status: 0 done, 1 the push failed (nothing half-written; run it again), 2 bad settings or
an unreadable log.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

HELP = "push rated turns to a Hugging Face dataset (or --dry-run to a folder)"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``corea push-ratings`` (added to ``p`` when given)."""
    p = p or argparse.ArgumentParser(prog="corea push-ratings", description=HELP)
    p.add_argument("--dataset", default=None,
                   help="dataset repository OWNER/NAME (default: COREA_HUB_DATASET)")
    p.add_argument("--db-url", default=None, help="the log (default: COREA_DB_URL / config)")
    p.add_argument("--endpoint", default=None, help="Hub URL (default: COREA_HUB_ENDPOINT, "
                   "HF_ENDPOINT or huggingface.co)")
    p.add_argument("--public", action="store_true",
                   help="create the repository public (default: private)")
    p.add_argument("--dry-run", metavar="OUT_DIR", default=None,
                   help="write the Parquet shard and the card under OUT_DIR; push nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``corea push-ratings`` with these arguments."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Push (or write) once (exit status as in the module docstring)."""
    from pydantic import ValidationError

    from ..config import load_settings
    from ..export.hub import HubPushError, HubTarget, push_ratings, write_local
    from ..store import StorageError, Store

    overrides = {k: v for k, v in (("hub_dataset", args.dataset), ("db_url", args.db_url),
                                   ("hub_endpoint", args.endpoint)) if v is not None}
    if args.public:
        overrides["hub_private"] = False
    try:
        settings = load_settings(**overrides)
    except (ValidationError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = HubTarget.from_settings(settings)
    if target is None and args.dry_run is None:
        print("error: no dataset: set COREA_HUB_DATASET or pass --dataset OWNER/NAME",
              file=sys.stderr)
        return 2
    try:
        with Store(settings.db_url) as store:
            if args.dry_run is not None:
                repo = target.repo_id if target else "OWNER/DATASET"
                shard = write_local(store, args.dry_run, repo, settings.hub_license)
                print(f"wrote {shard} and the card {shard.parent.parent / 'README.md'}")
                return 0
            print(push_ratings(store, target).message())
            return 0
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write: {exc}", file=sys.stderr)
        return 2
    except HubPushError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
