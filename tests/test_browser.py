"""The app in a real browser: headless Chromium (Debian's) driven by Playwright.

Asks one question, watches the SLM's reasoning stream, the decision text, the LLM's answer and the
rating buttons, rates the answer, and saves a screenshot to ``assets/screenshot-test.png``.

By default the models are scripted (the point here is the UI wiring; real models are exercised in
``test_integration_models.py``). Set ``COREA_BROWSER_REAL=1`` to run the embedded models instead
(used to make README's screenshot, ``assets/screenshot.png``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

from corea.auth import Roles
from corea.backends.fake import FakeBackend
from corea.config import Settings
from corea.service import CoreaService

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from browser import free_port, launch_chromium, require_chromium  # noqa: E402

pytestmark = pytest.mark.browser

ASSETS = Path(__file__).resolve().parents[1] / "assets"
QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
            "clips in May. How many clips did Natalia sell altogether in April and May?")
SLM_REPLY = ("In April Natalia sold 48 clips. In May she sold half as many: 48 / 2 = 24 clips. "
             "Altogether: 48 + 24 = 72. \\boxed{72}\nConfidence: 0.55")
LLM_REPLY = ("April: 48 clips. May: 48 / 2 = 24 clips. Total: 48 + 24 = 72 clips. "
             "The answer is \\boxed{72}.")


def _serve(demo):
    import app

    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                theme=app.THEME)
    return f"http://127.0.0.1:{port}/"



@pytest.fixture
def served_app(tmp_path):
    sync_api = require_chromium()
    import app

    real = os.environ.get("COREA_BROWSER_REAL") == "1"
    # real: README's screenshot, what a visitor of a fresh clone's app sees (adapter, shipped
    # signals); scripted: the plain SLM's name, as the conftest turns both off
    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'browser.sqlite'}",
                        **(dict(use_shipped_adapter=True, use_shipped_signals=True) if real
                           else {}))
    roles = None
    if real:
        service = CoreaService(settings)
        roles = Roles(token="an-owner-token")  # an owner is configured: this page is a visitor's
    else:
        service = CoreaService(
            settings,
            slm=FakeBackend([SLM_REPLY], continuations=[" 0.5"], chunk_chars=6, delay_s=0.02,
                            model_name=settings.slm.name),
            llm=FakeBackend([LLM_REPLY], chunk_chars=6, delay_s=0.02,
                            model_name=settings.llm.name))
    demo = app.build_demo(service, roles=roles)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                theme=app.THEME)
    try:
        yield sync_api, f"http://127.0.0.1:{port}/", service, real
    finally:
        demo.close()


def test_ask_stream_decide_and_rate_in_browser(served_app):
    sync_api, url, service, real = served_app
    timeout_ms = 600_000 if real else 60_000
    with sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            box = page.locator("#corea-question textarea")
            box.wait_for(timeout=60_000)
            box.fill(QUESTION)
            page.locator("#corea-send").click()

            chat = page.locator("#corea-chat")
            # the SLM's reasoning block appears (titled with the model name) while text streams
            chat.get_by_text("Small model reasoning").first.wait_for(timeout=timeout_ms)
            # the decision, in plain words, with its reason
            decision = chat.get_by_text("threshold 0.70").first
            decision.wait_for(timeout=timeout_ms)
            text = decision.inner_text()
            assert ("Deferred to the large model" in text or "Answered by the small model" in text
                    or "stated no confidence" in text)
            # the turn summary appears once the cascade is done
            details = page.locator("#corea-details")
            sync_api.expect(details).to_contain_text("logged as #1", timeout=timeout_ms)
            if not real:
                assert "Deferred to the large model — confidence 0.55 < threshold 0.70" in text
                sync_api.expect(chat).to_contain_text("Large model (Qwen2.5-Coder-1.5B-Instruct)")
                sync_api.expect(chat).to_contain_text("Small model's answer:")
                sync_api.expect(details).to_contain_text("by Qwen2.5-Coder-1.5B-Instruct")
            # the turn card: the verdict, the gauge against τ, a row per model, the final answer
            sync_api.expect(chat).to_contain_text("vs τ 0.70", timeout=timeout_ms)
            sync_api.expect(chat).to_contain_text("tokens in / out")
            sync_api.expect(chat).to_contain_text("Final answer:")
            # both units against the large model alone, in the card and the session summary
            sync_api.expect(chat).to_contain_text("This turn: cost $")
            sync_api.expect(chat).to_contain_text("compute ")
            # the running session summary
            sync_api.expect(page.locator("#corea-session-summary")).to_contain_text(
                "This session: 1 question(s)", timeout=timeout_ms)
            sync_api.expect(page.locator("#corea-session-summary")).to_contain_text(
                "large model alone")

            up = page.locator("#corea-thumbs-up")
            down = page.locator("#corea-thumbs-down")
            assert up.is_visible() and down.is_visible()
            up.click()
            sync_api.expect(page.locator("#corea-rating-status")).to_contain_text(
                "for interaction #1", timeout=30_000)
            ASSETS.mkdir(exist_ok=True)
            name = "screenshot.png" if real else "screenshot-test.png"
            page.screenshot(path=str(ASSETS / name), full_page=True)
        finally:
            browser.close()
    row = service.store.get_interaction(1)
    assert row["question"] == QUESTION and row["rating_thumbs"] == "up"


def _playwright():
    sync_api = require_chromium()
    return sync_api


def _fake_service(tmp_path):
    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'browser.sqlite'}")
    return CoreaService(settings, slm=FakeBackend([SLM_REPLY], model_name=settings.slm.name),
                        llm=FakeBackend([LLM_REPLY], model_name=settings.llm.name))


def test_threshold_explorer_updates_live_in_browser(tmp_path, monkeypatch):
    """Moving τ (here: the paper-rule button and the slider's keyboard) updates the metrics
    table and the status line in the page."""
    import json

    sync_api = _playwright()
    runs = tmp_path / "runs"
    run = runs / "synthetic-run"
    run.mkdir(parents=True)
    with open(run / "items.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({
                "id": str(i), "slm_correct": i % 3 == 0, "llm_correct": i % 2 == 0,
                "slm": {"confidence": (i % 10) / 10, "cost_usd": 1e-5,
                        "signals": {"solution_prob": 0.9 if i % 3 == 0 else 0.5}},
                "llm": {"cost_usd": 3e-5}}) + "\n")
    monkeypatch.setenv("COREA_RUNS_DIR", str(runs))
    import app

    demo = app.build_demo(_fake_service(tmp_path))
    url = _serve(demo)
    try:
        with sync_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": 1360, "height": 1100})
                page.goto(url, wait_until="domcontentloaded")
                page.get_by_role("tab", name="Threshold explorer").click()
                sync_api.expect(page.locator("#corea-explorer-status")).to_contain_text(
                    "synthetic-run: 40 row(s)", timeout=60_000)
                # next to the slider: SLM $1e-5 and LLM $3e-5 per item break even at 67%
                sync_api.expect(page.locator("#corea-explorer-break-even")).to_contain_text(
                    "money: 67%", timeout=30_000)
                # body cells (value column): row 0 is "threshold τ", row 5 "deferral rate"
                tau_row = page.locator("#corea-explorer-table [data-testid=cell-0-1]")
                defer_row = page.locator("#corea-explorer-table [data-testid=cell-5-1]")
                sync_api.expect(page.locator("#corea-explorer-table [data-testid=cell-5-0]")
                                ).to_have_text("deferral rate", timeout=30_000)
                sync_api.expect(tau_row).to_contain_text("0.7", timeout=30_000)
                sync_api.expect(defer_row).to_contain_text("0.7")  # confidences 0.0-0.6 of 0.0-0.9
                page.get_by_role("button", name="τ = LLM pass@1 (paper)").click()
                sync_api.expect(tau_row).to_contain_text("0.5", timeout=30_000)
                sync_api.expect(defer_row).to_contain_text("0.5")
                # the rule's explanation stays after the slider's own update (it used to vanish)
                rule = page.locator("#corea-explorer-rule")
                sync_api.expect(rule).to_contain_text("Paper rule", timeout=30_000)
                page.wait_for_timeout(1500)
                sync_api.expect(rule).to_contain_text("Paper rule")
                number = page.locator("#corea-explorer-threshold input[type=number]")
                number.fill("0.2")
                number.press("Enter")
                sync_api.expect(tau_row).to_contain_text("0.2", timeout=30_000)
                sync_api.expect(defer_row).to_contain_text("0.2")
                assert page.locator(".vega-embed").count() >= 3  # frontier, reliability, hist
            finally:
                browser.close()
    finally:
        demo.close()


@contextlib.contextmanager
def _training_tab(service, manager):
    """Serve the app with this training manager in headless Chromium and open its Training tab;
    yields the page (closed, with the server, on exit)."""
    sync_api = _playwright()
    import app

    token = "owner-token-training"  # the owner opens the console's sign-in link
    demo = app.build_demo(service, training_manager=manager, roles=Roles(token=token))
    url = _serve(demo)
    try:
        with sync_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": 1360, "height": 1300})
                page.goto(f"{url}?token={token}", wait_until="domcontentloaded")
                page.get_by_role("tab", name="Training").click()
                yield page
            finally:
                browser.close()
    finally:
        demo.close()


def test_training_tab_starts_plots_and_stops_a_run_in_browser(tmp_path):
    """Start a run from the Training tab (a fake trainer stands in for train.grpo), watch the
    live plot and log, stop it, and see the stopped status and its checkpoint."""
    import sys

    from corea.jobs import DeviceInfo, JobManager

    sync_api = _playwright()
    service = _fake_service(tmp_path)
    manager = JobManager(service.store, runs_root=tmp_path / "runs" / "train",
                              device=DeviceInfo("cpu", "CPU", "CPU (2 cores) — only the smoke "
                                                "and LoRA recipes are practical here"))
    fake = str(Path(__file__).parent / "helpers" / "fake_train.py")
    real_command = manager.command
    manager.command = lambda *a, **k: [sys.executable, fake] + real_command(*a, **k)[1:]
    with _training_tab(service, manager) as page:
        sync_api.expect(page.locator("#corea-train-device")).to_contain_text(
            "only the smoke and LoRA recipes", timeout=60_000)
        steps = page.get_by_label("Steps")
        steps.fill("500")
        page.locator("#corea-train-start").click()
        sync_api.expect(page.locator("#corea-train-action")).to_contain_text(
            "Started run #1", timeout=30_000)
        status = page.locator("#corea-train-status")
        sync_api.expect(status).to_contain_text("status **running**".replace("**", ""),
                                                timeout=30_000)
        sync_api.expect(page.locator("#corea-train-log textarea")).to_have_value(
            __import__("re").compile("step 3"), timeout=30_000)
        page.locator(".vega-embed").first.wait_for(timeout=30_000)  # the Altair plot
        page.locator("#corea-train-stop").click()
        sync_api.expect(page.locator("#corea-train-action")).to_contain_text(
            "Stopping", timeout=30_000)
        sync_api.expect(status).to_contain_text("status stopped", timeout=60_000)
        sync_api.expect(status).to_contain_text("checkpoint(s)", timeout=10_000)
    run = service.store.get_job(1)
    assert run["status"] == "stopped" and run["checkpoints"]


def test_training_tab_runs_the_confidence_recipe_in_browser(tmp_path):
    """The real ``train.confidence`` (recipe ``cpu-calibrate-0.5b`` on the committed GSM8K train
    generations, with the tiny random model in place of the 0.5B so it takes seconds) started
    from the Training tab: it completes, and the tab shows its checkpoints and the live chart,
    whose third panel is the batch reliability read from the run's ``confidences.jsonl``."""
    from corea.backends.weights import safetensors_checkpoint
    from corea.jobs import DeviceInfo, JobManager, read_confidences
    from corea.ui.training import metrics_chart

    sync_api = _playwright()
    try:
        safetensors_checkpoint("embedded:slm", "~/.cache/corea")  # the tiny model's tokenizer
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"the embedded SLM checkpoint can't be built: {type(e).__name__}: {e}")
    service = _fake_service(tmp_path)
    manager = JobManager(service.store, runs_root=tmp_path / "runs" / "train",
                         device=DeviceInfo("cpu", "CPU", "CPU (test)"))
    with _training_tab(service, manager) as page:
        recipe = page.locator("#corea-train-recipe input")
        recipe.click()
        recipe.fill("cpu-calibrate")
        page.get_by_role("option", name="cpu-calibrate-0.5b").click()
        page.get_by_label("Model (blank: the recipe's)").fill("tiny-random")
        page.get_by_label("Steps").fill("2")
        page.locator("#corea-train-start").click()
        sync_api.expect(page.locator("#corea-train-action")).to_contain_text(
            "Started run #1 (cpu-calibrate-0.5b)", timeout=30_000)
        status = page.locator("#corea-train-status")
        sync_api.expect(status).to_contain_text("status completed", timeout=240_000)
        sync_api.expect(status).to_contain_text("checkpoint(s)", timeout=10_000)
        page.locator(".vega-embed").first.wait_for(timeout=30_000)
    run = service.store.get_job(1)
    assert run["status"] == "completed" and run["checkpoints"], run.get("message")
    assert "train.confidence" in run["config"]["command"]
    conf, y, steps = read_confidences(run["output_dir"])
    assert steps == [1, 2] and len(conf) == len(y) == 16  # batch 2 x 4 accumulation, 2 steps
    assert all(0 <= c <= 0.9 for c in conf)
    chart = metrics_chart([{"step": 1, "calibration/ece": 0.3}], (conf, y, steps)).to_dict()
    assert len(chart["hconcat"]) == 3 and chart["hconcat"][2]["title"]["text"] == (
        "Batch reliability")
