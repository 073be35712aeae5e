"""`python -m corea ask` on scripted backends: streaming, JSON result, warnings, exit codes."""

from __future__ import annotations

import json

import pytest

import corea.service
from corea import cli
from corea.backends.base import BackendError
from corea.backends.fake import FakeBackend


@pytest.fixture
def fake_service(monkeypatch, tmp_path):
    monkeypatch.setenv("COREA_DB_URL", f"sqlite:///{tmp_path / 'cli.sqlite'}")
    made = {}

    class Scripted(corea.service.CoreaService):
        def __init__(self, settings):
            super().__init__(settings,
                             slm=FakeBackend(["Think. \\boxed{4}\nConfidence: 0.3"], model_name="s"),
                             llm=FakeBackend(model_name="l",
                                             error=BackendError("unreachable", "refused")))
            made["service"] = self

    monkeypatch.setattr(corea.service, "CoreaService", Scripted)
    return made


def test_ask_streams_prints_json_and_warns(fake_service, capsys):
    assert cli.main(["ask", "What is 2+2?"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["final_answer"] == "4" and result["decision"]["reason"] == "llm_error"
    assert "Think." in err and "── SLM (s, llamacpp) ──" in err
    assert "[warning] LLM unavailable (unreachable) — showing the small model's answer" in err
    assert fake_service["service"].store.count() == 1


@pytest.mark.parametrize("argv", [["ask", "  "], ["ask", "-t", "1.5", "q?"]])
def test_bad_input_exits_2(fake_service, argv, capsys):
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_bad_settings_exit_2_without_traceback(monkeypatch, capsys):
    monkeypatch.setenv("COREA_THRESHOLD", "abc")
    assert cli.main(["ask", "q?"]) == 2
    assert capsys.readouterr().err.startswith("error: invalid settings: threshold:")
    monkeypatch.delenv("COREA_THRESHOLD")
    assert cli.main(["ask", "--config", "/nonexistent.yaml", "q?"]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_one_entry_point_lists_every_command_and_the_old_aliases_are_gone(capsys):
    from pathlib import Path

    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("ask", "evaluate", "report", "beforeafter", "calibrate"):
        assert name in out
    # the one-release `python -m corea.X` aliases were dropped: `corea X` is the command
    package = Path(cli.__file__).resolve().parents[1]
    for old in ("evaluate", "report", "beforeafter", "calibrate"):
        assert not (package / f"{old}.py").exists(), old
