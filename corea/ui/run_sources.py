"""The evaluation runs a page may show, by name: this deployment's (``runs/``) and those committed
with the code (``data/generations``, packed), listed afresh on every call and read through a
cache. No other path is ever read: a source is a listed run's name (or that run's own path).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..eval.runs import items_file, list_runs, load_results, read_run

__all__ = ["RunSources", "COMMITTED_RUNS"]

COMMITTED_RUNS = Path(__file__).resolve().parents[2] / "data" / "generations"
"""The evaluation runs committed with the code (packed, ``data/generations``): listed out of the
box, beside the runs of this deployment."""


class RunSources:
    """The runs under ``runs_root`` and, when given, under ``committed_root``.

    Args:
        runs_root: this deployment's runs (``corea evaluate``, the Training tab's evaluations).
        committed_root: the runs committed with the code (the app passes
            :data:`COMMITTED_RUNS`); a run of ``runs_root`` with the same name wins (it is this
            machine's continuation of the committed one). None: ``runs_root`` only.
    """

    def __init__(self, runs_root: str | os.PathLike,
                 committed_root: str | os.PathLike | None = None):
        self.runs_root = Path(runs_root)
        self.committed_root = Path(committed_root) if committed_root is not None else None
        self._cache: dict[str, tuple[tuple, list[dict]]] = {}  # path -> (stat, item rows)

    def committed(self) -> dict[str, Path]:
        """The committed runs, name → folder, packed or not."""
        if self.committed_root is None:
            return {}
        return {Path(p).name: Path(p) for p in list_runs(self.committed_root)}

    def local(self) -> dict[str, Path]:
        """This deployment's runs, name → folder."""
        return {Path(p).name: Path(p) for p in list_runs(self.runs_root)}

    def paths(self) -> dict[str, Path]:
        """Every listed run, name → folder (committed first, by name, then this
        deployment's)."""
        return {**self.committed(), **self.local()}

    def choices(self) -> list[tuple[str, str]]:
        """``(label, name)`` per listed run: the name, with " (committed)" for a committed
        run (no server path goes to the page)."""
        local = self.local()
        return [(name if name in local else f"{name} (committed)", name)
                for name in self.paths()]

    def default(self) -> str | None:
        """The last run of ``runs_root`` by name; without one (a fresh deploy) the committed
        test-split run with the most item rows (by file size), a chain-of-thought run (the app's
        default solve mode) before a ``pot``/``mot`` one; None when there is neither."""
        local = list(self.local())
        if local:
            return local[-1]
        best, key = None, None
        for name, path in self.committed().items():
            f = items_file(path)
            run = read_run(path) or {}
            if f is None or run.get("split") == "train":
                continue  # a run fit on: open on test items
            solve = ((run.get("identity") or {}).get("slm") or {}).get("solve", "cot")
            k = (solve == "cot", f.stat().st_size)
            if key is None or k > key:
                best, key = name, k
        return best

    def path(self, source: str) -> Path | None:
        """The folder of a listed run: ``source`` is its name, or its own full path; None for
        anything else."""
        paths = self.paths()
        p = Path(str(source))
        hit = paths.get(p.name)
        if not p.is_absolute() and len(p.parts) == 1:
            return hit
        return hit if hit is not None and hit.resolve() == p.resolve() else None

    def items(self, source: str) -> list[dict]:
        """The item rows of a listed run (:func:`corea.eval.runs.load_results`, plain or
        packed), cached by the file's size and time.

        Raises:
            FileNotFoundError: ``source`` is not a listed run.
            ValueError: a corrupt line other than the last.
        """
        path = self.path(source)
        f = items_file(path) if path is not None else None
        if f is None:
            raise FileNotFoundError(f"no run {Path(str(source)).name!r}")
        st = f.stat()
        key = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(str(path))
        if hit is None or hit[0] != key:
            hit = (key, load_results(path))
            self._cache[str(path)] = hit
        return hit[1]
