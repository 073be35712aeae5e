"""COREA web app (Gradio 6): the tabs of :mod:`corea.ui` over one :class:`corea.service.CoreaService`.

Run ``python app.py`` and open http://127.0.0.1:7860; the OpenAI-compatible API
(:mod:`corea.api`) is served on the same port under ``/v1``. Nothing heavy happens at import:
models load on the first question, once, shared by all sessions. The module-level ``demo`` is what Hugging Face
Spaces serves.
"""

from __future__ import annotations

import os

import gradio as gr

from corea.auth import Roles
from corea.clients import TrustedProxies, uvicorn_trust
from corea.config import load_settings
from corea.service import CoreaService
from corea.ui import ask, calibration, explorer, history, owner, training


# Fonts present offline: Gradio's default web font drew "COREA" as "CORE" plus a smaller "A" (and
# "1.5B" with a small "B") in a browser with no internet; the system's sans-serif has every glyph.
THEME = gr.themes.Default(
    font=[gr.themes.Font(f) for f in ("ui-sans-serif", "system-ui", "DejaVu Sans", "sans-serif")],
    font_mono=[gr.themes.Font(f) for f in ("ui-monospace", "DejaVu Sans Mono", "monospace")])


def build_demo(service: CoreaService, training_manager=None, roles: Roles | None = None
               ) -> gr.Blocks:
    """The app's Blocks (not launched): Ask, History, Threshold explorer (with the calibrator
    panel), Training, and the owner sign-in box.

    ``training_manager``: a :class:`corea.jobs.JobManager` for the Training tab (default: one over
    the service's database). ``roles``: who is an owner (:mod:`corea.auth`; default from the
    environment, with a one-time owner token when none is configured). Every owner action checks
    the role in its handler; the Training tab and the calibrator panel are shown to owners only
    and their endpoints are not in the public API."""
    settings = service.settings
    roles = roles or Roles.from_env(TrustedProxies.configured(settings.trusted_proxies))
    runs_root = os.environ.get("COREA_RUNS_DIR", "runs")
    with gr.Blocks(title="COREA — small model first, large model when unsure") as demo:
        gr.Markdown("# COREA\nA small model answers first and states its confidence; "
                    "below the threshold τ the question goes to a large model.")
        owner_box = owner.build_panel(owner.OwnerHandlers(roles), demo)
        with gr.Tab("Ask"):
            ask_tab = ask.build_tab(ask.AskHandlers(service, roles=roles), demo)
        with gr.Tab("History"):
            history_tab = history.build_tab(history.HistoryHandlers(service, roles=roles), demo)
        with gr.Tab("Threshold explorer") as explorer_tab:
            explorer.build_tab(explorer.ExplorerHandlers(
                service, runs_root=runs_root, roles=roles,
                committed_root=explorer.COMMITTED_RUNS), demo, ask_tab, explorer_tab)
            cal_panel = calibration.build_panel(
                calibration.CalibrationHandlers(service, runs_root=runs_root, roles=roles),
                demo, ask_tab)
        with gr.Tab("Training", visible=False) as training_tab:  # shown to owners on load
            training_view = training.build_tab(
                training.TrainingHandlers(service, manager=training_manager,
                                          runs_root=runs_root, enabled=settings.training_tab,
                                          roles=roles), ask_tab, demo)

        def owner_view(request: gr.Request):
            """Owner-only parts shown to owners (the handlers check the role themselves)."""
            is_owner = roles.is_owner(request)
            return (gr.update(visible=settings.training_tab and is_owner),
                    gr.update(visible=is_owner))

        view = [training_tab, cal_panel]
        for ev in owner_box.events:  # load, sign-in, sign-out: refresh the view and the history
            ev.then(owner_view, None, view, api_visibility="private").then(
                history_tab.refresh, history_tab.inputs, history_tab.outputs,
                api_visibility="private").then(
                ask_tab.model_info, None, [ask_tab.model_md], api_visibility="private").then(
                training_view.role_view, training_view.inputs, training_view.outputs,
                api_visibility="private")
    demo.queue(default_concurrency_limit=settings.max_concurrency,
               max_size=settings.queue_size)
    return demo


service = CoreaService(load_settings())
# uvicorn reads X-Forwarded-For from the trusted proxies only (its default trusts 127.0.0.1)
trusted = TrustedProxies.configured(service.settings.trusted_proxies)
os.environ["FORWARDED_ALLOW_IPS"] = uvicorn_trust(trusted)
roles = Roles.from_env(trusted)
demo = build_demo(service, roles=roles)


def main() -> None:
    """Serve the web app and, next to it, the OpenAI-compatible API (``/v1``) on one server.
    Without API keys the API is served on a loopback address only; elsewhere the web app runs
    alone and the log says why."""
    from corea.api import create_api
    from corea.api.server import bind_plan, serve, with_ui

    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    for line in roles.console_lines(port):  # the one place a generated token is shown
        print(line, flush=True)
    from corea.export.hub import start_pusher

    if start_pusher(service.settings, lambda: service.store) is not None:
        print(f"[hub] pushing rated turns to the dataset {service.settings.hub_dataset} every "
              f"{service.settings.hub_push_every_s:g} s", flush=True)
    api = create_api(service)
    ok, message = bind_plan(host, api.state.corea_keys.enabled)
    if not ok:
        print(f"[api] not served: {message}", flush=True)
        demo.launch(server_name=host, server_port=port, theme=THEME)
        return
    print(f"[api] OpenAI-compatible API on http://{host}:{port}/v1 (model 'corea'); {message}",
          flush=True)
    serve(with_ui(api, demo, theme=THEME), host, port,
          forwarded_allow_ips=os.environ["FORWARDED_ALLOW_IPS"])


if __name__ == "__main__":
    main()
