"""One object that owns the models, the cascade and the interaction log.

``CoreaService`` is what the app and the CLI use: question in, events out, every interaction logged.
Models load lazily on first use and are shared by every caller (and every app session).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Iterator, Sequence

from .backends import Backend, make_backend
from .backends.overrides import TierParams, with_params
from .cascade import Cascade
from .config import Settings, load_settings
from .costs import priced_like
from .events import CascadeResult, Event
from .journal import Journal, journal_path
from .store import Store
from .store.durable import DurableLog, LogStatus
from .types import Message, check_solve

log = logging.getLogger(__name__)


class CoreaService:
    """The cascade plus its interaction log.

    Args:
        settings: configuration; defaults to :func:`corea.config.load_settings`.
        slm, llm: backends to use instead of the configured ones (tests pass scripted fakes).
        middle: backends for the middle tiers of an N-tier cascade (``settings.tiers[1:-1]``),
            instead of the configured ones; by default built from the settings on first use.
        store: an open :class:`corea.store.Store`; by default opened from ``settings.db_url``.
            If the database cannot be opened the service still answers, :attr:`logging_error`
            says why, and turns and ratings wait in the local journal until it opens
            (:class:`corea.store.durable.DurableLog`, :meth:`log_status`).
    """

    def __init__(self, settings: Settings | None = None, slm: Backend | None = None,
                 llm: Backend | None = None, store: Store | None = None,
                 middle: Sequence[Backend] | None = None):
        self.settings = settings or load_settings()
        self._slm = slm
        self._llm = llm
        self._middle = list(middle) if middle is not None else None
        self._lock = threading.Lock()
        self._calibrator = None
        self._calibrator_loaded = False
        self._probe = None
        self._probe_loaded = False
        self._router = None
        self._router_loaded = False
        self._early_exit, self._early_exit_loaded = None, False
        self.logbook = DurableLog(
            self.settings.db_url,
            Journal(journal_path(self.settings.cache_dir, self.settings.db_url)), store=store)

    # the log: a database that may be away, and the journal that waits for it
    @property
    def store(self) -> Store | None:
        """The open interaction log, ``None`` while the database cannot be opened."""
        return self.logbook.store

    @store.setter
    def store(self, value: Store | None) -> None:
        self.logbook.store = value

    @property
    def logging_error(self) -> str | None:
        """Why the database is not open (``None`` when it is)."""
        return self.logbook.error

    @logging_error.setter
    def logging_error(self, value: str | None) -> None:
        self.logbook.error = value

    @property
    def logging_paused(self) -> str | None:
        """Why the last write failed (``None``: it worked)."""
        return self.logbook.paused

    @property
    def journal(self) -> Journal:
        return self.logbook.journal

    def log_status(self) -> LogStatus:
        """Where the log stands, for the page (``log_status().message(owner)``); tries to
        open the database and replay the journal first. Never raises."""
        return self.logbook.status()

    # backends are built on first use: nothing heavy at import or construction time
    @property
    def slm(self) -> Backend:
        probe = self.probe  # a probe in use needs the SLM's hidden states from its engine
        router = self.router  # so does a router
        early_exit = self.early_exit  # and an early exit
        with self._lock:
            if self._slm is None:
                ms = self.settings.slm
                reads = router is not None or early_exit is not None or (
                    probe is not None and self.settings.confidence_source in ("probe", "auto"))
                if ms.backend == "llamacpp" and not ms.hidden_states and reads:
                    ms = ms.model_copy(update={"hidden_states": True})
                self._slm = make_backend(ms, self.settings.cache_dir)
            return self._slm

    @property
    def probe(self):
        """The SLM's hidden-state probe (:mod:`corea.signals.probe`): ``settings.probe_dir`` or the one
        shipped for this SLM; None when there is none, it is turned off, or it belongs to another
        SLM. Loaded once; a probe that cannot be read is logged and ignored."""
        with self._lock:
            if not self._probe_loaded:
                self._probe_loaded = True
                self._probe = None
                path = self.settings.probe_path()
                if path is not None:
                    try:
                        from .signals.probe import LinearProbe

                        probe = LinearProbe.load(path)
                        if probe.card.slm == self.settings.slm.name:
                            self._probe = probe
                        else:
                            log.warning("probe %s was fit for %s, not %s; not used", path,
                                        probe.card.slm, self.settings.slm.name)
                    except Exception:  # noqa: BLE001 — a broken artifact must not stop answers
                        log.exception("could not load the probe at %s; not used", path)
            return self._probe

    @property
    def router(self):
        """The SLM's pre-generation router (``settings.slm.route``: a ``Router`` by probe, a
        ``Delegator`` by delegation, :func:`delegator_for`), None when off or not found; loaded
        once, a broken one logged and ignored (the SLM then always solves)."""
        with self._lock:
            if not self._router_loaded:
                self._router_loaded, self._router = True, slm_router(self.settings)
            return self._router

    @property
    def early_exit(self):
        """The SLM's early exit, loaded once (:func:`corea.cascade.early_exit.slm_early_exit`)."""
        from .cascade.early_exit import slm_early_exit

        with self._lock:
            if not self._early_exit_loaded:
                self._early_exit_loaded, self._early_exit = True, slm_early_exit(self.settings)
            return self._early_exit

    @property
    def llm(self) -> Backend:
        ms = self.settings.llm if self.middle else next_reads_states(self.router, self.settings.llm)
        with self._lock:
            if self._llm is None:
                self._llm = make_backend(ms, self.settings.cache_dir)
            return self._llm

    @property
    def middle(self) -> list[Backend]:
        """The middle tiers' backends (none for two tiers), built on first use (the first
        reads its states when the SLM routes by delegation)."""
        models = self.settings.tier_models()[1:-1]
        models[:1] = [next_reads_states(self.router, m) for m in models[:1]]
        with self._lock:
            if self._middle is None:
                self._middle = [make_backend(ms, self.settings.cache_dir) for ms in models]
            return self._middle

    def tier_names(self) -> list[str]:
        """Every tier's model name in cascade order (the SLM's first, the LLM's last)."""
        return [m.name for m in self.settings.tier_models()]

    @property
    def calibrator(self):
        """The SLM's calibrator (:mod:`corea.signals.calibrator`), or None: the latest one fitted here
        (``corea calibrate --save``, the explorer's Calibrator panel) or the one shipped for the
        SLM (``corea/assets/calibrators/``), whichever has the higher held-out AUROC.

        Loaded once; :meth:`reload_calibrator` picks up a new version. A calibrator file that
        cannot be read is reported in the log and ignored (the cascade then uses the verbal
        confidence)."""
        with self._lock:
            if not self._calibrator_loaded:
                self._calibrator_loaded = True
                from .signals.calibrator import (CalibratorStore, better, load_plain,
                                         shipped_calibrator_dir)
                own = shipped = None
                try:
                    own = CalibratorStore(self.settings.calibrators_path).load(
                        self.settings.slm.name)
                except Exception:  # noqa: BLE001 — a broken artifact must not stop answering
                    log.exception("could not load the calibrator; using verbal confidence")
                d = shipped_calibrator_dir(self.settings.slm.name) \
                    if self.settings.use_shipped_signals else None
                if d is not None:
                    try:
                        shipped = load_plain(d)
                    except Exception:  # noqa: BLE001
                        log.exception("could not load the shipped calibrator at %s", d)
                self._calibrator = better(shipped, own)
            return self._calibrator

    def reload_calibrator(self):
        """Forget the loaded calibrator and load the latest version again; returns it."""
        with self._lock:
            self._calibrator_loaded = False
        return self.calibrator

    def use_slm(self, model: str, backend: str | None = None) -> str:
        """Switch the SLM to ``model`` (e.g. a trained checkpoint folder) for every later question.

        ``backend=None`` picks the engine for a checkpoint folder with
        :func:`corea.backends.lora_gguf.checkpoint_backend`: llama.cpp for a LoRA adapter on a GGUF base,
        else transformers.

        The new SLM is priced like the one it replaces (a fine-tune costs what its base costs),
        loads lazily on the next question, and gets its own calibrator (if any). Returns its
        display name (``<run>/<checkpoint>`` for a checkpoint folder).

        Raises:
            FileNotFoundError: ``model`` looks like a local path that does not exist.
        """
        from pathlib import Path

        p = Path(model).expanduser()
        if (model.startswith((".", "/", "~")) or p.exists()) and not p.exists():
            raise FileNotFoundError(f"no model folder at {model}")
        name = f"{p.parent.name}/{p.name}" if p.exists() else model
        if backend is None:
            from .backends.lora_gguf import checkpoint_backend

            backend = checkpoint_backend(p, self.settings.cache_dir) if p.exists() \
                else "transformers"
        with self._lock:
            s = self.settings
            prices = priced_like(s.prices, name, s.slm.name)
            slm = type(s.slm).model_validate({**s.slm.model_dump(), "backend": backend,
                                              "model": str(p) if p.exists() else model,
                                              "display_name": name})
            self.settings = s.model_copy(update={"slm": slm, "prices": prices})
            self._slm = None
            self._calibrator_loaded = False
            self._probe_loaded = False
            self._router_loaded = False
            self._early_exit_loaded = False
        return name

    @property
    def cascade(self) -> Cascade:
        return Cascade(self.slm, self.llm, self.settings, calibrator=self.calibrator,
                       probe=self.probe, middle=self.middle, router=self.router,
                       early_exit=self.early_exit)

    def ask(self, question: str, threshold: float | Sequence[float] | None = None,
            session_id: str = "default",
            choices: Sequence[str] | None = None,
            cancel: threading.Event | None = None,
            tier_params: Sequence[TierParams | None] | None = None,
            context: Sequence[Message] | None = None,
            solve: str | None = None) -> Iterator[Event]:
        """Run the cascade on ``question`` and log the interaction (also when cancelled).

        ``tier_params``: per-request generation overrides, one entry per tier in cascade order
        (SLM, middle tiers, LLM; :class:`corea.backends.overrides.TierParams`), ``None`` for a
        tier keeps its settings. ``threshold``: one τ (the first tier's) or one per tier but
        the last. ``context``: earlier turns of the conversation, given to every tier.
        ``solve``: how every tier solves for this request (``cot`` / ``pot`` / ``mot``,
        :data:`corea.types.SOLVE_MODES`); ``None`` keeps each tier's configured mode. See
        :meth:`corea.cascade.Cascade.run` for the events and errors (also ValueError for an
        unknown ``solve``). If the row cannot be written, the final result carries a warning
        saying so (the answer is still returned).
        """
        cascade = self.cascade
        if solve is not None:
            check_solve(solve)
            cascade.options = [replace(cascade.tier_options(k), solve=solve)
                               for k in range(cascade.n_tiers)]
        if tier_params:
            n = cascade.n_tiers
            params = (list(tier_params) + [None] * n)[:n]
            cascade.slm, *cascade.middle, cascade.llm = [
                with_params(b, p) for b, p in zip(cascade.backends, params)]
        return cascade.run(question, threshold=threshold, choices=choices, cancel=cancel,
                           on_result=lambda r: self._log(r, session_id), context=context)

    def _log(self, result: CascadeResult, session_id: str) -> None:
        """Write the turn's row, or keep it in the local journal while the database is away
        (:class:`corea.store.durable.DurableLog`) and say so."""
        warning = self.logbook.log_turn(result, session_id)
        if warning:
            result.warnings.append(warning)

    def replay_journal(self) -> int:
        """Write the journaled turns and ratings to the database (oldest first); returns how
        many. Raises when the database still cannot be written (the rest stays in the
        journal)."""
        self.logbook.ensure_open()
        return self.logbook.replay()

    def rate(self, interaction_id: int, thumbs: str | None = None, correction: str | None = None,
             comment: str | None = None, session_id: str | None = None) -> int:
        """Store a rating for a logged interaction, or keep it in the journal while the
        database is away; returns the rating id (negative when journaled). A turn kept in the
        journal is rated by its provisional (negative) id. With ``session_id`` only that
        session's interactions can be rated.

        Raises:
            RuntimeError: neither the database nor the local journal can take it.
            ValueError: unknown interaction id or a bad rating.
        """
        return self.logbook.rate(interaction_id, thumbs=thumbs, correction=correction,
                                 comment=comment, session_id=session_id)


def slm_router(settings):
    """The SLM's pre-generation router of ``settings`` (:class:`corea.config.Settings`) — see
    :attr:`CoreaService.router` — or None; a broken artifact is logged, never raised."""
    route = settings.slm.route
    if route is None or not (route.probe or settings.use_shipped_signals):
        return None
    from .adapters import CALIBRATED_SLM, EMBEDDED_SLM_NAME
    from .cascade.route import load_router

    base = EMBEDDED_SLM_NAME if settings.slm.model == CALIBRATED_SLM \
        else None  # its adapter writes only the confidence line
    try:
        return delegator_for(settings, route, base) if route.by == "delegation" \
            else load_router(route, settings.slm.name, base)
    except Exception:  # noqa: BLE001 — a broken artifact must not stop answers
        log.exception("could not load the route model; routing is off")
        return None


def delegator_for(settings, route, base: str | None):
    """The first tier's :class:`~corea.cascade.delegate.Delegator` in front of the second
    tier's model (``settings``: :class:`corea.config.Settings`, ``route``: its
    ``slm.route``), or None with a warning where it cannot run: no model found, one fit in
    front of another model, or an engine of either tier that reads no hidden states (only
    llama.cpp does; the service turns them on for it, :func:`next_reads_states`)."""
    from .cascade.delegate import load_delegator

    nxt = settings.tier_models()[1]
    for whose, ms in (("the small model's", settings.slm), ("the next tier's", nxt)):
        if ms.backend != "llamacpp":
            log.warning("slm.route.by is delegation but %s engine (%s) reads no hidden "
                        "states; the small model solves every question", whose, ms.backend)
            return None
    return load_delegator(route, settings.slm.name, nxt.name, base)


def next_reads_states(router, ms):
    """``ms`` (the second tier's model settings) with ``hidden_states`` on when the first tier
    routes by delegation (``router`` a :class:`~corea.cascade.delegate.Delegator`) on
    llama.cpp, which reads the second tier's state; else ``ms`` unchanged."""
    from .cascade.delegate import Delegator

    if isinstance(router, Delegator) and ms.backend == "llamacpp" and not ms.hidden_states:
        return ms.model_copy(update={"hidden_states": True})
    return ms
