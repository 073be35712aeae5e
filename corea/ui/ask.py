"""The Ask tab: a question streams through the cascade into the chat; the answer can be rated.

(Just over 400 lines: the handlers, the measured examples with their evidence and the layout
share the tab's session state.)

:class:`AskHandlers` are the tab's handlers (free of widgets, tests call them directly), with
:class:`~corea.ui.turn_view.TurnView` folding the cascade's events into chat messages;
:func:`build_tab` lays the tab out.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import gradio as gr

from ..auth import Roles
from ..clients import PerClientLimit, TrustedProxies
from ..cascade import auto_ranking
from ..events import Final
from ..timing import shipped_time_model
from ..adapters import CALIBRATED_SLM, EMBEDDED_SLM_NAME
from ..model_config import EMBEDDED_SLM
from .about import how_it_works
from .cards import against_line, session_summary, signal_words
from .latex import LATEX_DELIMITERS as LATEX
from .solve_choice import (REFUSED, default_solve, measured, requested_solve, solve_choices,
                           solve_note)
from ..redact import describe_db, plain_logging_off
from ..selection import STATED_DECIDES, stated_decides_for
from ..service import CoreaService
from ..threshold_split import dead_threshold_warning, logged_confidence, threshold_split
from ..validation import InvalidQuestion
from ..zerogpu import gpu
from .turn_view import (TurnView, chat_message, confidence_badge, decision_icon, snapshot,
                        stated_badge, turn_details)

log = logging.getLogger("corea.app")

__all__ = ["AskHandlers", "TurnView", "build_tab", "confidence_badge", "decision_icon",
           "stated_badge", "turn_details"]

RECENT_TURNS = 20
"""The Ask tab's dead-threshold warning looks at this many of the session's latest turns."""


class AskHandlers:
    """The Ask tab's event handlers, free of widgets so tests can call them directly.

    Args:
        service: the cascade + log the handlers use.
        roles: who is an owner (:class:`corea.auth.Roles`; default from the environment).
            Visitors rate only their own session's turns, see no database location details,
            server paths or internal URLs, and ask at most ``questions_per_minute`` questions a
            minute per client (:meth:`corea.auth.Roles.limit_key`: the signed-in user, else the
            address through the trusted proxies; a reload or a new session shares it).
    """

    def __init__(self, service: CoreaService, roles: Roles | None = None):
        self.service = service
        self.roles = roles or Roles.from_env(
            TrustedProxies.configured(service.settings.trusted_proxies))
        self._cancels: dict[str, threading.Event] = {}
        self._asked = PerClientLimit(window_s=60.0)
        tm = shipped_time_model()  # seconds the large model alone would take
        slm = service.settings.slm
        if tm is not None and slm.model == CALIBRATED_SLM:  # the adapter runs at its base's speed
            tm = tm.like(slm.name, EMBEDDED_SLM_NAME)
        self.time_model = tm

    @property
    def settings(self):
        return self.service.settings  # follows use_slm() switches

    @staticmethod
    def _session(request) -> str:
        return getattr(request, "session_hash", None) or "anonymous"

    def deciding_signal_text(self) -> str:
        """Which number decides, in words (for the model panel): for ``auto``, the first of
        :func:`corea.cascade.auto_ranking`, the rule the cascade applies."""
        s, service = self.settings, self.service
        cal, probe = service.calibrator, service.probe
        source = s.confidence_source
        if source == "probe" and probe is None:
            return "verbal (probe requested, but none is available for this SLM)"
        if source not in ("auto", "probe"):
            return source
        stated_first = stated_decides_for(s.slm.model)
        best = "probe" if source == "probe" else \
            next(iter(auto_ranking(cal, probe, stated_first)), "verbal")
        if best == "probe":
            c = probe.card
            name = f"probe {c.version}" if c.version else "probe"
            return (f"{name} on the SLM's hidden state (held-out AUROC "
                    f"{c.cv.get('auroc') or 0:.2f} vs stated "
                    f"{(c.cv_verbal or {}).get('auroc') or 0:.2f}; fit on {c.n_train} "
                    "train items)")
        if best == "calibrated":
            c = cal.card
            stated = c.verbal_held_out.get("auroc")
            versus = (f"vs stated {stated:.2f}" if stated is not None else
                      "no out-of-sample stated confidence to compare with")
            return (f"calibrated (calibrator v{c.version}: held-out AUROC "
                    f"{c.held_out.get('auroc') or 0:.2f}, {versus}; {c.n} labelled answers)")
        if stated_first:
            return f"verbal — {STATED_DECIDES} (it ranks at least as well as the token " \
                   "calibrator on train cross-fit)"
        return "verbal (no learned signal that beats it yet)"

    def model_info(self, request: gr.Request | None = None) -> str:
        """The models panel. The database appears as its kind and location, never its
        credentials; a visitor gets no file path and a plain reason when logging is off."""
        s, service = self.settings, self.service
        owner = self.roles.is_owner(request)
        if service.store is not None:
            db = describe_db(s.db_url, detail=owner)
        elif owner:
            db = f"**off** — {service.logging_error}"
        else:
            db = f"**off** — {describe_db(s.db_url)} is unavailable"
        source = self.deciding_signal_text()
        source = f"{signal_words(source.split()[0])} — {source}"
        order = "confidence first (stated before solving)" \
            if s.deferral_order == "confidence_first" else "answer first"
        models = s.tier_models()
        if len(models) > 2:  # N tiers: one line each, with its τ (the first follows the slider)
            taus = s.tier_thresholds()
            lines = [f"{i + 1}. {m.name} (`{m.backend}`)"
                     + (" — τ from the slider" if i == 0 else
                        f" — τ {taus[i]:.2f}" if i < len(taus) else " — always answers")
                     for i, m in enumerate(models)]
            return ("**Tiers:**  \n" + "  \n".join(lines) + f"  \n**Deciding signal:** "
                    f"{source} (first tier); {order}  \n**Rule:** a tier defers iff its "
                    f"confidence < its τ or none  \n**Log:** {db}")
        return (f"**SLM:** {s.slm.name} (`{s.slm.backend}`)  \n**LLM:** {s.llm.name} "
                f"(`{s.llm.backend}`)  \n**Deciding signal:** {source}; {order}  \n"
                f"**Rule:** defer iff confidence < τ or none  \n**Log:** {db}")

    def respond(self, question: str, history: list, threshold: float, my_ids: list,
                request: gr.Request | None = None, solve: str | None = None):
        """Stream one question through the cascade into the chat.

        ``solve``: the "Solve by" choice (:func:`corea.ui.solve_choice.requested_solve`: a mode
        for every tier, or ``None`` / "configured" for each tier's own); another value is refused
        with a chat message, the question kept in the box, before any rate limit is counted.
        Yields tuples ``(history, question_box, details_markdown, rating_target_update, my_ids)``.
        The question box is cleared by the first update of an accepted question only (later
        ones leave it as it is: text typed while the answer streams is kept) and kept whole when
        the question is refused. Bad input and faults become chat/warning messages, never
        exceptions.
        """
        session = self._session(request)
        history = list(history or [])
        my_ids = list(my_ids or [])
        try:
            solve = requested_solve(solve)
        except ValueError:
            history.append(chat_message(REFUSED))
            yield snapshot(history), question, gr.update(), gr.update(), my_ids
            return
        public = not self.roles.is_owner(request)
        wait = self._too_fast(self.roles.limit_key(request)) if public else None
        if wait is not None:
            gr.Warning(wait)
            yield snapshot(history), question, gr.update(), gr.update(), my_ids
            return
        cancel = self._cancels.setdefault(session, threading.Event())
        cancel.clear()
        try:
            events = self.service.ask(question, threshold=threshold, session_id=session,
                                      cancel=cancel, solve=solve)
        except (InvalidQuestion, ValueError) as exc:
            gr.Warning(str(exc))
            yield snapshot(history), question, gr.update(), gr.update(), my_ids
            return
        except Exception as exc:  # e.g. a backend that cannot be built: never a traceback
            log.exception("cannot start the cascade")
            history.append(chat_message("⚠️ The models could not be started"
                                + ("." if public else f": {exc}")))
            yield snapshot(history), question, gr.update(), gr.update(), my_ids
            return
        history.append({"role": "user", "content": question})
        view = TurnView(history, threshold, public=public)
        s = self.settings
        view.against = lambda r: against_line(r, s.prices, s.llm.name, self.time_model)
        yield snapshot(history), "", "", gr.update(), my_ids  # the box is cleared once, here
        keep = gr.update()  # later updates leave the box alone: the visitor may type meanwhile
        try:
            for ev in events:
                view.apply(ev)
                if not isinstance(ev, Final):
                    yield snapshot(history), keep, gr.update(), gr.update(), my_ids
        except Exception as exc:  # never a traceback in the UI
            log.exception("cascade failed")
            history.append(chat_message("⚠️ Something went wrong" + ("." if public else f": {exc}")))
            yield snapshot(history), keep, gr.update(), gr.update(), my_ids
            return
        r = view.result
        if r is not None and r.interaction_id is not None:
            my_ids.append([r.interaction_id, r.question[:60]])
            yield (snapshot(history), keep, turn_details(r),
                   gr.update(choices=self.rating_choices(my_ids), value=r.interaction_id), my_ids)
        else:
            yield snapshot(history), keep, turn_details(r) if r else "", gr.update(), my_ids

    def _too_fast(self, client: str) -> str | None:
        """``None`` when this client may ask now (and counts the question), else the message:
        at most ``questions_per_minute`` questions in any 60 s."""
        limit = self.settings.questions_per_minute
        wait = self._asked.take(client, limit)
        if wait is None:
            return None
        return (f"You are asking too fast: at most {limit} questions a minute on this "
                f"shared demo. Try again in {max(1, int(wait + 0.999))} s.")

    @staticmethod
    def rating_choices(my_ids: list) -> list[tuple[str, int]]:
        """Dropdown choices ``(label, interaction id)`` for this session's turns, newest first."""
        return [(f"#{i} — {q}", i) for i, q in reversed(my_ids)]

    def log_status(self, request: gr.Request | None = None) -> str:
        """The log's state for the page (:meth:`corea.service.CoreaService.log_status`): empty
        while rows are written, else e.g. "The log is offline: 2 turns waiting; they will be
        saved when it returns." (the database's own message for an owner only)."""
        try:
            text = self.service.log_status().message(owner=self.roles.is_owner(request))
        except Exception:  # noqa: BLE001 — a status line must never break the page
            log.exception("log status failed")
            return ""
        return f"🗄️ {text}" if text else ""

    def stop(self, request: gr.Request | None = None) -> None:
        """Ask the running turn of this session to stop (it is logged as cancelled)."""
        ev = self._cancels.get(self._session(request))
        if ev is not None:
            ev.set()

    def session_summary(self, request: gr.Request | None = None) -> str:
        """The running summary of this browser session's answered questions
        (:func:`corea.ui.cards.session_summary`)."""
        store = self.service.store
        if store is None:
            return ""
        try:
            rows = store.list_interactions(limit=None, session_id=self._session(request))
        except Exception:  # noqa: BLE001 — a summary is optional; never a traceback
            log.exception("session summary failed")
            return ""
        s = self.settings
        return session_summary(rows, s.prices, s.llm.name, self.time_model)

    def threshold_note(self, threshold: float, request: gr.Request | None = None) -> str:
        """A dead-threshold warning (:mod:`corea.threshold_split`) when τ would have deferred all,
        or none, of this session's last :data:`RECENT_TURNS` answered turns, with the τ range
        that splits them; "" otherwise (or without a log)."""
        store = self.service.store
        if store is None:
            return ""
        try:
            rows = store.list_interactions(limit=None, session_id=self._session(request))
            confidences = [logged_confidence(r) for r in rows
                           if r.get("decision_reason") is not None][:RECENT_TURNS]
            split = threshold_split(confidences, float(threshold))
        except Exception:  # noqa: BLE001 — a note is optional; never a traceback
            log.exception("threshold note failed")
            return ""
        if split.n < 2:  # one turn says nothing about a threshold
            return ""
        return dead_threshold_warning(split, "recent turns of this session") or ""

    def rate(self, thumbs: str, interaction_id, correction: str, comment: str,
             request: gr.Request | None = None) -> str:
        """Save a rating for the chosen interaction id; returns a status line. A visitor can
        rate only the turns of their own session (an owner any)."""
        return self._rate(thumbs, interaction_id, correction, comment, request)[1]

    def rate_form(self, thumbs: str, interaction_id, correction: str, comment: str,
                  request: gr.Request | None = None) -> tuple[str, bool]:
        """:meth:`rate` for the form: ``(status line, saved)``; :meth:`form_after_rating` then
        clears the form when the rating was saved."""
        saved, msg = self._rate(thumbs, interaction_id, correction, comment, request)
        return msg, saved

    @staticmethod
    def form_after_rating(saved: bool):
        """``(correction box, comment box)`` after a rating: cleared once it is saved (the next
        rating starts empty), left as typed when it is not (nothing typed is lost)."""
        return ("", "") if saved else (gr.update(), gr.update())

    def _rate(self, thumbs: str, interaction_id, correction: str, comment: str,
              request) -> tuple[bool, str]:
        """``(saved, status line)`` of :meth:`rate`."""
        if interaction_id in (None, ""):
            return False, "Ask a question first: there is nothing to rate yet."
        owner = self.roles.is_owner(request)
        try:
            rid = self.service.rate(int(interaction_id), thumbs=thumbs,
                                    correction=(correction or "").strip() or None,
                                    comment=(comment or "").strip() or None,
                                    session_id=None if owner else self._session(request))
        except (ValueError, RuntimeError) as exc:
            if not owner and isinstance(exc, RuntimeError):
                return False, "⚠️ " + plain_logging_off()
            return False, f"⚠️ {exc}"
        except Exception as exc:  # database fault: say so, never a traceback
            log.exception("rating failed")
            return False, "⚠️ Could not save the rating" + (f": {exc}" if owner else
                                                            " (the database is unavailable).")
        icon = {"up": "👍", "down": "👎"}.get(thumbs, "")
        if rid < 0:  # journaled (corea.store.durable)
            return True, (f"Kept rating {icon} for interaction #{interaction_id}: the log is "
                          "offline; it is saved when the database is back.")
        again = ""
        try:
            if self.service.store is not None and \
                    self.service.store.rating_count(int(interaction_id)) > 1:
                again = " It replaces your earlier rating of this turn (the latest one counts)."
        except Exception:  # noqa: BLE001 — the rating is saved; the note is optional
            pass
        return True, f"Saved rating {icon} (#{rid}) for interaction #{interaction_id}.{again}"


# --------------------------------------------------------------------------------- layout


# One kept, one deferred with a fresh clone's defaults (τ 0.7, confidence_source auto: the shipped
# calibrator on the SLM with its calibration adapter v4), measured 2026-12-07 with the embedded
# models, greedy, COREA_SLM__N_THREADS=1 COREA_LLM__N_THREADS=1, CoreaService(load_settings())
# .ask(question), 3 runs each in fresh processes, the same numbers each time:
# - kept: the SLM answers 60 (right), calibrated confidence 0.77 ≥ 0.70 (stated 0.10), 159 tokens;
# - deferred: since pre-generation routing is on by default, the shipped prompt probe reads 0.21
#   < its routing threshold 0.407 and sends it straight to the large model (0 SLM tokens; it
#   answers 14, right). Without routing the SLM ends in "\text{Confidence: } \frac{1}{2}"
#   (no usable answer), calibrated 0.19 < 0.70, 283 tokens. Rerun:
#   bench/stop_rules_examples.py (bench/results/examples_shipped_defaults.json).
# Both are GSM8K train items (00605, 00380). tests/test_examples_truth.py (-m model) checks both.
# "A pen costs $3…" is no longer here: the SLM answers 12 but at calibrated 0.65 it defers.
EXAMPLES = [["Ivan has 20 dice. Jerry has twice as many dice as Ivan. How many dice do they have "
             "altogether?"],
            ["Patrick is half the age of his elder brother Robert. If Robert will turn 30 after 2 "
             "years, how old is Patrick now?"]]


def about_text(settings) -> str:
    """"How it works" for these settings (:func:`corea.ui.about.how_it_works`): what it says of
    the stated confidence comes from the embedded SLM's adapter card, and is left out for another
    SLM."""
    embedded = settings.slm.model in (EMBEDDED_SLM, CALIBRATED_SLM)
    return how_it_works(EMBEDDED_SLM_NAME if embedded else settings.slm.name,
                        settings.slm.model == CALIBRATED_SLM)


def build_tab(h: AskHandlers, demo: gr.Blocks) -> SimpleNamespace:
    """The Ask tab's widgets and events (call inside ``gr.Tab("Ask")``). Returns what other
    tabs use: ``threshold`` (the slider), ``model_md`` (the models line) and ``model_info`` (the
    handler that refreshes it)."""
    settings = h.settings
    my_ids = gr.State([])
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Conversation", height=520, elem_id="corea-chat",
                                 feedback_options=None, latex_delimiters=LATEX)
            with gr.Row():
                # no max_length: the browser would cut a long question silently (its ending,
                # "How many?", lost); the handler refuses it with the limit and keeps the text
                question = gr.Textbox(placeholder="Ask a question…", show_label=False, scale=5,
                                      elem_id="corea-question")
                send = gr.Button("Send", variant="primary", scale=1, elem_id="corea-send")
                stop_btn = gr.Button("Stop", scale=1, elem_id="corea-stop")
            details = gr.Markdown(elem_id="corea-details", latex_delimiters=LATEX)
            summary = gr.Markdown(elem_id="corea-session-summary")
            log_md = gr.Markdown(elem_id="corea-log-status")
            with gr.Accordion("Rate an answer", open=True):
                with gr.Row():
                    target = gr.Dropdown(label="Interaction", choices=[],
                                         elem_id="corea-rate-target", scale=2)
                    up = gr.Button("👍 Correct", elem_id="corea-thumbs-up", scale=1)
                    down = gr.Button("👎 Wrong", elem_id="corea-thumbs-down", scale=1)
                with gr.Row():
                    correction = gr.Textbox(label="Corrected answer (optional)")
                    comment = gr.Textbox(label="Comment (optional)")
                rating_status = gr.Markdown(elem_id="corea-rating-status")
        with gr.Column(scale=1):
            threshold = gr.Slider(0.0, 1.0, value=settings.threshold, step=0.01,
                                  label="Threshold τ", elem_id="corea-threshold",
                                  info="Keep the small model's answer iff its confidence ≥ τ")
            solves = settings.tier_solves()  # the default: the tiers' configured mode
            solve = gr.Radio(solve_choices(solves), value=default_solve(solves), label="Solve by",
                             info=solve_note(measured()), elem_id="corea-solve")
            # what the page is built with is served to everyone: a visitor's view until load
            tau_note = gr.Markdown(elem_id="corea-threshold-note")
            model_md = gr.Markdown(h.model_info(SimpleNamespace(session_hash=None)),
                                   elem_id="corea-model-info")
            gr.Examples(EXAMPLES, inputs=[question])
            with gr.Accordion("How it works", open=False, elem_id="corea-how"):
                gr.Markdown(about_text(settings))

    ask_inputs = [question, chatbot, threshold, my_ids, solve]
    ask_outputs = [chatbot, question, details, target, my_ids]
    limit = settings.max_concurrency
    respond = gpu(h.respond)  # spaces.GPU on a ZeroGPU Space, unchanged elsewhere
    for trigger in (question.submit, send.click):
        trigger(respond, ask_inputs, ask_outputs, concurrency_limit=limit,
                concurrency_id="cascade").then(h.session_summary, None, [summary],
                                               api_visibility="private").then(
            h.threshold_note, [threshold], [tau_note], api_visibility="private").then(
            h.log_status, None, [log_md], api_visibility="private")
    threshold.change(h.threshold_note, [threshold], [tau_note], api_visibility="private",
                     trigger_mode="always_last")
    stop_btn.click(h.stop, None, None, queue=False)
    def rate_up(interaction_id, correction, comment, request: gr.Request):
        return h.rate_form("up", interaction_id, correction, comment, request)

    def rate_down(interaction_id, correction, comment, request: gr.Request):
        return h.rate_form("down", interaction_id, correction, comment, request)

    saved = gr.State(False)  # not an API output: /rate_up and /rate_down return the status
    for button, fn in ((up, rate_up), (down, rate_down)):
        button.click(fn, [target, correction, comment], [rating_status, saved]).then(
            h.form_after_rating, [saved], [correction, comment], api_visibility="private").then(
            h.log_status, None, [log_md], api_visibility="private")
    demo.load(h.model_info, None, [model_md])  # the SLM / calibrator may have changed
    # the log's state: on load and every 15 s (a database that returns empties the journal)
    demo.load(h.log_status, None, [log_md], api_visibility="private")
    gr.Timer(15).tick(h.log_status, None, [log_md], api_visibility="private")
    return SimpleNamespace(threshold=threshold, model_md=model_md, model_info=h.model_info)
