"""corea.jobs: start / watch / stop training runs and evaluations as child processes, recorded in
the database.
A fake trainer script stands in for train.grpo (the real one is covered by test_train_smoke)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from corea.store.storage import open_store
from corea.jobs import DeviceInfo, JobError, JobManager, checkpoints, log_tail, read_metrics

FAKE = str(Path(__file__).parent / "helpers" / "fake_train.py")
CPU = DeviceInfo("cpu", "CPU", "CPU (2 cores) — only the smoke and LoRA recipes are practical")



@pytest.fixture
def manager(tmp_path, monkeypatch):
    store, err = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert err is None
    # "python -m train.grpo ..." -> "python fake_train.py -m train.grpo ...": argv stays the same
    m = JobManager(store, runs_root=tmp_path / "runs", device=CPU)
    m.python = sys.executable
    real_command = m.command

    def command(*a, **k):
        cmd = real_command(*a, **k)
        return [cmd[0], FAKE] + cmd[1:]

    monkeypatch.setattr(m, "command", command)
    return m


def test_a_run_completes_and_is_recorded(manager):
    rid = manager.start_training("cpu-smoke", max_steps=4, num_generations=2, reward_weights=[1, 1, 0.5, 1])
    run = manager.wait(rid, 30)
    assert run["status"] == "completed" and run["return_code"] == 0
    assert run["config"]["max_steps"] == 4 and "--num_generations" in run["config"]["command"]
    assert run["final_metrics"]["step"] == 4 and run["started_at"] and run["ended_at"]
    names = [Path(c).name for c in run["checkpoints"]]
    assert names == ["checkpoint-2", "checkpoint-4", Path(run["output_dir"]).name]
    assert [m["step"] for m in read_metrics(run["output_dir"])] == [1, 2, 3, 4]
    assert "done" in log_tail(run["output_dir"])


def test_stop_ends_the_run_cleanly_and_keeps_a_checkpoint(manager):
    rid = manager.start_training("cpu-smoke", max_steps=200)
    deadline = time.monotonic() + 20
    while not read_metrics(manager.get(rid)["output_dir"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    msg = manager.stop(rid)
    assert "finishes its current step" in msg
    run = manager.wait(rid, 30)
    assert run["status"] == "stopped" and run["return_code"] == 128 + signal.SIGTERM
    assert run["checkpoints"] and "stopped early" in log_tail(run["output_dir"])
    assert run["message"] is None  # the Stop button: no "from outside" note
    with pytest.raises(JobError, match="not running"):
        manager.stop(rid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_run_ended_by_a_signal_from_outside_is_stopped_not_completed(manager, sig):
    """README: a run ended by a signal is "stopped". The trainer (train.grpo's own signal
    handling, in a real child process) saves and ends cleanly on the signal; it used to exit 0,
    so the run was recorded "completed"."""
    rid = manager.start_training("cpu-smoke", max_steps=200)
    deadline = time.monotonic() + 20
    while not read_metrics(manager.get(rid)["output_dir"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(manager.get(rid)["pid"], sig)  # e.g. `kill -TERM -<pgid>`, a container stop
    run = manager.wait(rid, 30)
    assert run["status"] == "stopped", run
    assert run["return_code"] == 128 + sig
    assert signal.Signals(sig).name in run["message"] and "outside" in run["message"]
    assert run["checkpoints"] and "stopped early" in log_tail(run["output_dir"])


def test_failure_is_recorded_with_the_log_tail(manager):
    rid = manager.start_training("cpu-smoke", extra_args=["--fail"])
    run = manager.wait(rid, 30)
    assert run["status"] == "failed" and run["return_code"] == 3
    assert "Traceback: boom" in run["message"]


def test_refusals(manager):
    with pytest.raises(JobError, match="needs a GPU"):
        manager.start_training("gpu-1.5b")
    with pytest.raises(JobError, match="unknown recipe"):
        manager.start_training("nope")
    with pytest.raises(JobError, match="at least 2"):
        manager.start_training("cpu-smoke", num_generations=1)
    rid = manager.start_training("cpu-smoke", max_steps=200)
    with pytest.raises(JobError, match="still running"):
        manager.start_training("cpu-smoke")
    manager.stop(rid)
    assert manager.wait(rid, 30)["status"] == "stopped"


def test_orphaned_running_rows_are_marked_interrupted(tmp_path):
    store, _ = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    out = tmp_path / "r"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoint-3" / "adapter_config.json").write_text("{}")
    rid = store.add_job("train", "cpu-smoke", {}, str(out), pid=999_999_99)
    JobManager(store, runs_root=tmp_path, device=CPU)
    run = store.get_job(rid)
    assert run["status"] == "interrupted" and run["checkpoints"] == [str(out / "checkpoint-3")]
    assert checkpoints(out) == [str(out / "checkpoint-3")]


def test_an_evaluation_is_a_job_too(manager, tmp_path, monkeypatch):
    """Evaluations of checkpoints go through the same manager: recorded with kind "evaluate",
    their log readable, listed apart from training runs."""
    script = "import sys; print('evaluating', sys.argv[-1]); sys.exit(0)"
    monkeypatch.setattr(manager, "evaluation_command",
                        lambda ck, backend, n, run_dir: [sys.executable, "-c", script, str(run_dir)])
    ck = tmp_path / "0001-cpu-smoke" / "checkpoint-2"
    ck.mkdir(parents=True)
    jid = manager.start_evaluation(ck, "transformers", 5)
    job = manager.wait(jid, 30)
    assert job["kind"] == "evaluate" and job["status"] == "completed" and job["return_code"] == 0
    assert job["name"] == "gsm8k-test-5-0001-cpu-smoke-checkpoint-2"
    assert "evaluating" in manager.log(jid)
    assert [j["id"] for j in manager.jobs(kind="evaluate")] == [jid]
    assert manager.jobs(kind="train") == []


# ----------------------------------------------------------------------------- tab handlers

def _service(tmp_path):
    from corea.backends.fake import FakeBackend
    from corea.config import Settings
    from corea.service import CoreaService

    return CoreaService(Settings(db_url=f"sqlite:///{tmp_path / 'app.sqlite'}"),
                        slm=FakeBackend(["\\boxed{1}\nConfidence: 0.9"], model_name="s"),
                        llm=FakeBackend(["\\boxed{1}"], model_name="l"))


def test_tab_handlers_start_view_stop_and_plot(tmp_path, manager):
    from corea.ui.training import TrainingHandlers

    svc = _service(tmp_path)
    manager.store = svc.store
    tr = TrainingHandlers(svc, manager=manager, runs_root=tmp_path / "runs")
    assert "CPU" in tr.device_line() and "cpu-smoke" in tr.recipe_choices()
    status, dd = tr.start("gpu-7b", "", 3, 2, 1, 1, 1)
    assert "needs a GPU" in status
    status, dd = tr.start("cpu-smoke", "", 200, 2, 1.0, 0.5, 2.0)
    assert status.startswith("Started run #")
    rid = dd["value"]
    run = manager.get(rid)
    cmd = run["config"]["command"]
    # cpu-smoke's rewards are [correctness, format, confidence_l1, distinct_chars]
    i = cmd.index("--reward_weights")
    assert cmd[i + 1: i + 5] == ["1.0", "0.5", "2.0", "1.0"]
    deadline = time.monotonic() + 20
    while len(read_metrics(run["output_dir"])) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    md, logtxt, chart, ck = tr.live(rid)[:4]
    assert "status **running**" in md and "step" in logtxt and chart is not None
    spec = chart.to_dict()
    assert len(spec["hconcat"]) == 2
    assert "finishes its current step" in tr.stop(rid)
    manager.wait(rid, 30)
    md, logtxt, chart, ck, runs_dd = tr.live(rid)  # once more after the end
    assert "status **stopped**" in md and ck["value"].endswith(Path(run["output_dir"]).name)
    assert tr.live(rid)[0] == {"__type__": "update"}  # then quiet
    assert "Choose a run" in tr.stop(None)


def test_use_checkpoint_as_slm_switches_the_service(tmp_path):
    from corea.ui.training import TrainingHandlers

    svc = _service(tmp_path)
    ck = tmp_path / "runs" / "0001-cpu-lora" / "checkpoint-20"
    ck.mkdir(parents=True)
    base_price = svc.settings.prices[svc.settings.slm.name]
    tr = TrainingHandlers(svc, runs_root=tmp_path / "runs")
    msg = tr.use_as_slm(str(ck))
    assert "0001-cpu-lora/checkpoint-20" in msg
    s = svc.settings
    assert s.slm.backend == "transformers" and s.slm.model == str(ck)
    assert s.prices["0001-cpu-lora/checkpoint-20"] == base_price
    assert "⚠️" in tr.use_as_slm(str(tmp_path / "missing" / "checkpoint-1"))
    assert tr.use_as_slm("") == "Choose a checkpoint first."


def test_disabled_tab_refuses_everything(tmp_path):
    from corea.ui.training import TrainingHandlers

    tr = TrainingHandlers(_service(tmp_path), runs_root=tmp_path, enabled=False)
    assert "disabled" in tr.start("cpu-smoke", "", 1, 2, 1, 1, 1)[0]
    assert "disabled" in tr.use_as_slm("/tmp") and "disabled" in tr.evaluate("/tmp", 5)
    assert "disabled" in tr.device_line() and tr.run_choices() == []


def test_the_command_runs_the_recipes_trainer(tmp_path):
    store, _ = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    m = JobManager(store, runs_root=tmp_path / "runs", device=CPU)
    grpo_cmd = m.command("cpu-smoke", tmp_path / "o", num_generations=4,
                         reward_weights=[1.0, 0.5, 1.0, 1.0])
    assert grpo_cmd[1:3] == ["-m", "train.grpo"]
    assert grpo_cmd[grpo_cmd.index("--per_device_train_batch_size") + 1] == "4"
    assert "--reward_weights" in grpo_cmd
    conf_cmd = m.command("cpu-calibrate-0.5b", tmp_path / "o", max_steps=5, num_generations=8,
                         reward_weights=[])
    assert conf_cmd[1:3] == ["-m", "train.confidence"]
    assert conf_cmd[conf_cmd.index("--num_generations") + 1] == "8"
    assert "--reward_weights" not in conf_cmd and "--per_device_train_batch_size" not in conf_cmd
    # the recipe parses with the trainer it names
    from train.confidence import make_parser

    args = make_parser().parse_args_and_config(conf_cmd[3:])
    assert args[0].trainer == "train.confidence" and args[0].estimator == "exact"


def _sleeper_evaluations(manager, monkeypatch, seconds=30):
    """Evaluations that just sleep (a stand-in for ``corea evaluate``)."""
    monkeypatch.setattr(manager, "evaluation_command",
                        lambda ck, backend, n, run_dir: [sys.executable, "-c",
                                                         f"import time; time.sleep({seconds})"])


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return None  # gone: reaped


def test_one_evaluation_at_a_time_reaped_and_truthful(manager, tmp_path, monkeypatch):
    import os
    import signal

    _sleeper_evaluations(manager, monkeypatch)
    ck = tmp_path / "runs" / "0001-cpu-smoke" / "checkpoint-2"
    ck.mkdir(parents=True)
    first = manager.start_evaluation(ck, "transformers", 5)
    with pytest.raises(JobError, match="one evaluation at a time"):
        manager.start_evaluation(ck, "transformers", 5)
    pid = manager.get(first)["pid"]
    # a SIGTERM from outside the app (not the Stop button): "stopped", never "completed"
    os.kill(pid, signal.SIGTERM)
    job = manager.wait(first, 20)
    assert job["status"] == "stopped" and job["return_code"] == -signal.SIGTERM
    assert "SIGTERM" in job["message"]
    assert _state(pid) is None  # waited for: no zombie left behind
    # the slot is free again; Stop then records "stopped" too
    second = manager.start_evaluation(ck, "transformers", 5)
    assert "Stopping" in manager.stop(second)
    job = manager.wait(second, 20)
    assert job["status"] == "stopped" and _state(job["pid"]) is None


def test_runs_list_is_read_from_the_database_on_every_view(manager, tmp_path):
    """A run started before a page reload (here: by another process, straight into the
    database) is in the runs dropdown of the next page view, and stays chosen."""
    from types import SimpleNamespace

    from corea.auth import Roles
    from corea.ui.training import TrainingHandlers

    svc = SimpleNamespace(store=manager.store, settings=None, logging_error=None)
    tr = TrainingHandlers(svc, manager=manager, runs_root=tmp_path / "runs",
                          roles=Roles(host="127.0.0.1", on_space=False))
    assert tr.runs_dropdown()["choices"] == []
    jid = manager.store.add_job("train", "cpu-smoke", {}, str(tmp_path / "x"), None)
    upd = tr.runs_dropdown(jid)
    assert upd["choices"] == [(f"#{jid} cpu-smoke — running", jid)] and upd["value"] == jid
    visitor = TrainingHandlers(svc, manager=manager, roles=Roles(host="0.0.0.0",
                                                                 on_space=False))
    assert visitor.runs_dropdown(jid, SimpleNamespace(session_hash="v"))["choices"] == []


def test_an_owner_who_signs_in_after_the_page_loaded_sees_the_runs(manager, tmp_path):
    """The runs list was read at page load, as a visitor, and sign-in did not read it again:
    after a reload and a sign-in the list was empty (a running run could not be stopped) and the
    tab still said "Only the owner of this demo can do that."."""
    from types import SimpleNamespace

    from corea.auth import OWNER_ONLY, Roles
    from corea.ui.training import TrainingHandlers

    roles = Roles(token="tok", host="0.0.0.0", on_space=False)
    svc = SimpleNamespace(store=manager.store, settings=None, logging_error=None)
    tr = TrainingHandlers(svc, manager=manager, runs_root=tmp_path / "runs", roles=roles)
    jid = manager.store.add_job("train", "cpu-smoke", {}, str(tmp_path / "x"), None)
    page = SimpleNamespace(session_hash="reloaded-page")
    # page load, as a visitor: nothing listed, and the view refuses
    assert tr.runs_dropdown(None, page)["choices"] == []
    assert tr.view(None, page)[0] == OWNER_ONLY
    visitor = tr.role_view(None, page)
    assert visitor[0]["choices"] == [] and OWNER_ONLY not in visitor[1:]
    # sign-in: the app chains role_view on it
    assert roles.sign_in("tok", page)[0]
    dropdown, status, log, chart, ckpt, action, ck_action = tr.role_view(None, page)
    assert dropdown["choices"] == [(f"#{jid} cpu-smoke — running", jid)]
    assert OWNER_ONLY not in (status, action, ck_action) and (action, ck_action) == ("", "")
    # the timer: the same list is a no-op, a new run (or a new status) updates it
    upd, shown = tr.runs_tick(None, None, page)
    assert upd["choices"] == dropdown["choices"]
    assert tr.runs_tick(None, shown, page)[0] == {"__type__": "update"}
    jid2 = manager.store.add_job("train", "cpu-smoke", {}, str(tmp_path / "y"), None)
    upd, shown = tr.runs_tick(jid, shown, page)
    assert [i for _, i in upd["choices"]] == [jid2, jid] and upd["value"] == jid
    # a visitor's timer lists nothing
    other = SimpleNamespace(session_hash="someone-else")
    assert tr.runs_tick(None, None, other)[0]["choices"] == []


def test_the_app_refreshes_the_training_tab_on_sign_in_and_on_a_timer():
    """Wiring: the sign-in event chain ends with the Training tab's role view, and the tab has
    a timer that reads the runs list."""
    import app
    from corea.auth import Roles
    from corea.config import Settings
    from corea.service import CoreaService

    demo = app.build_demo(CoreaService(Settings(db_url="sqlite://")),
                          roles=Roles(token="tok", host="0.0.0.0", on_space=False))
    cfg = demo.config
    by_elem = {c["props"].get("elem_id"): c["id"] for c in cfg["components"]
               if c.get("props", {}).get("elem_id")}
    run, status = by_elem["corea-train-run"], by_elem["corea-train-status"]
    sign_in = by_elem["corea-owner-sign-in"]
    deps = cfg["dependencies"]
    chained = [d for d in deps if run in d["outputs"] and status in d["outputs"]
               and d["inputs"] == [run]]
    assert chained, "no event refreshes the runs list and the status together"
    timers = {c["id"] for c in cfg["components"] if c.get("type") == "timer"}
    assert any(run in d["outputs"] and any(t[0] in timers for t in d["targets"])
               and d["outputs"] != [] for d in deps)
    # the refresh follows a sign-in click (through its .then chain)
    by_id = {d["id"]: d for d in deps}

    def root(d):
        while d["trigger_after"] is not None:
            d = by_id[d["trigger_after"]]
        return d

    assert any(any(t[0] == sign_in for t in root(d)["targets"]) for d in chained)
