"""Decision policy, cost accounting, settings and question validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from corea.config import Price, Settings, load_settings
from corea.costs import cost_usd, missing_prices
from corea.policy import decide, llm_failed, slm_failed
from corea.validation import InvalidQuestion, validate_question


@pytest.mark.parametrize("conf,tau,defer,reason", [
    (0.82, 0.70, False, "confident"),
    (0.70, 0.70, False, "confident"),   # equal to τ is kept (strict <)
    (0.6999, 0.70, True, "low_confidence"),
    (0.0, 0.0, False, "confident"),     # τ = 0 keeps every parsed confidence
    (0.99, 1.0, True, "low_confidence"),
    (1.0, 1.0, False, "confident"),
    (None, 0.0, True, "no_confidence"),  # no confidence always defers
])
def test_decide(conf, tau, defer, reason):
    d = decide(conf, tau)
    assert (d.defer, d.reason, d.confidence, d.threshold) == (defer, reason, conf, tau)


def test_decision_messages():
    assert decide(0.45, 0.7).message == \
        "Deferred to the large model — confidence 0.45 < threshold 0.70"
    assert decide(0.82, 0.7).message == \
        "Answered by the small model — confidence 0.82 ≥ threshold 0.70"
    assert decide(None, 0.7).message == "Deferred — the small model stated no confidence"
    assert llm_failed(decide(0.1, 0.7), "timeout").message == \
        "LLM unavailable (timeout) — showing the small model's answer"
    assert slm_failed(0.7, "internal").reason == "slm_error"


@pytest.mark.parametrize("conf,tau", [(0.5, 1.5), (0.5, -0.1), (1.2, 0.5), (-0.1, 0.5)])
def test_decide_rejects_out_of_range(conf, tau):
    with pytest.raises(ValueError):
        decide(conf, tau)


def test_cost():
    prices = {"m": Price(input_per_mtok=0.5, output_per_mtok=1.5)}
    assert cost_usd("m", 1_000_000, 0, prices) == pytest.approx(0.5)
    assert cost_usd("m", 2000, 1000, prices) == pytest.approx((2000 * 0.5 + 1000 * 1.5) / 1e6)
    assert cost_usd("unknown", 1000, 1000, prices) == 0.0
    assert missing_prices(["m", "unknown"], prices) == ["unknown"]
    with pytest.raises(ValueError):
        cost_usd("m", -1, 0, prices)


def test_default_prices_cover_the_embedded_models():
    s = Settings()
    assert s.slm.name == "Qwen2.5-Coder-0.5B-Instruct" and s.llm.name == "Qwen2.5-Coder-1.5B-Instruct"
    assert missing_prices([s.slm.name, s.llm.name], s.prices) == []
    # the LLM costs about 3x the SLM per token (parameter ratio)
    assert s.prices[s.llm.name].output_per_mtok == pytest.approx(3 * s.prices[s.slm.name].output_per_mtok)


def test_env_overrides(monkeypatch):
    monkeypatch.setenv("COREA_THRESHOLD", "0.85")
    monkeypatch.setenv("COREA_LLM__BACKEND", "openai")
    monkeypatch.setenv("COREA_LLM__MODEL", "gpt-4o-mini")
    monkeypatch.setenv("COREA_LLM__BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("COREA_DB_URL", "sqlite:////tmp/x.sqlite")
    s = load_settings()
    assert s.threshold == 0.85 and s.llm.backend == "openai" and s.llm.name == "gpt-4o-mini"
    assert s.llm.base_url == "http://127.0.0.1:8000/v1" and s.db_url == "sqlite:////tmp/x.sqlite"
    assert s.slm.backend == "llamacpp"  # untouched


def test_yaml_file_and_precedence(tmp_path, monkeypatch):
    f = tmp_path / "corea.yaml"
    f.write_text("threshold: 0.6\nconfidence_mode: forced\nslm:\n  max_new_tokens: 128\n"
                 "prices:\n  my-model:\n    input_per_mtok: 1\n    output_per_mtok: 2\n")
    s = load_settings(f)
    assert s.threshold == 0.6 and s.confidence_mode == "forced" and s.slm.max_new_tokens == 128
    assert s.prices["my-model"].output_per_mtok == 2
    monkeypatch.setenv("COREA_THRESHOLD", "0.9")  # env beats the file
    assert load_settings(f).threshold == 0.9
    assert load_settings(f, threshold=0.1).threshold == 0.1  # explicit beats env


def test_bad_settings_are_rejected(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.yaml")
    monkeypatch.setenv("COREA_THRESHOLD", "1.5")
    with pytest.raises(ValidationError):
        load_settings()
    monkeypatch.setenv("COREA_THRESHOLD", "0.5")
    monkeypatch.setenv("COREA_CONFIDENCE_MODE", "psychic")
    with pytest.raises(ValidationError):
        load_settings()


def test_validate_question():
    assert validate_question("  What is 2+2?\n", 100) == "What is 2+2?"
    assert validate_question("a\x00b\x1bc\td\ne", 100) == "ab\td\ne"  # ESC c: a terminal reset
    assert validate_question("café".encode(), 100) == "café"
    assert validate_question("e\u0301", 100) == "é"  # NFC
    with pytest.raises(InvalidQuestion, match="enter a question"):
        validate_question(" \n ", 100)
    with pytest.raises(InvalidQuestion, match="too long: 101 characters"):
        validate_question("x" * 101, 100)
    with pytest.raises(InvalidQuestion, match="UTF-8"):
        validate_question(b"\xc3\x28", 100)
    with pytest.raises(InvalidQuestion, match="Unicode"):
        validate_question("bad \ud800 surrogate", 100)
    with pytest.raises(InvalidQuestion):
        validate_question(None, 100)


def test_partial_role_override_keeps_the_role_model(monkeypatch, tmp_path):
    # regression: COREA_LLM__N_THREADS alone once turned the LLM into the SLM
    monkeypatch.delenv("COREA_SLM__N_THREADS", raising=False)  # a shell's own setting
    monkeypatch.setenv("COREA_LLM__N_THREADS", "1")
    s = load_settings()
    assert s.llm.model == "embedded:llm" and s.llm.n_threads == 1
    assert s.slm.model == "embedded:slm" and s.slm.n_threads is None
    f = tmp_path / "c.yaml"
    f.write_text("slm:\n  max_new_tokens: 64\nllm:\n  temperature: 0.5\n")
    monkeypatch.delenv("COREA_LLM__N_THREADS")
    s = load_settings(f)
    assert (s.slm.model, s.slm.max_new_tokens) == ("embedded:slm", 64)
    assert (s.llm.model, s.llm.temperature) == ("embedded:llm", 0.5)


def test_plain_model_settings_for_a_role():
    from corea.config import ModelSettings
    s = Settings(llm=ModelSettings(max_new_tokens=5))
    assert (s.llm.model, s.llm.max_new_tokens) == ("embedded:llm", 5)
    assert Settings(llm=ModelSettings(model="embedded:slm")).llm.model == "embedded:slm"


def test_a_checkpoint_is_priced_like_its_base(tmp_path, capsys):
    from corea.costs import priced_like
    from corea.cli.evaluate import _settings_from_args, build_parser

    base = Price(input_per_mtok=1.0, output_per_mtok=2.0)
    prices = {"base": base, "own": Price(input_per_mtok=5.0, output_per_mtok=5.0)}
    assert priced_like(prices, "ckpt", "base")["ckpt"] == base
    assert priced_like(prices, "own", "base")["own"].input_per_mtok == 5.0  # keeps its own price
    assert "ckpt" not in priced_like(prices, "ckpt", "nobody")               # no base price
    assert "ckpt" not in prices                                              # not mutated

    # evaluate --slm <checkpoint folder>: priced like the SLM it replaces, no warning
    ckpt = tmp_path / "checkpoint-40"
    ckpt.mkdir()
    args = build_parser().parse_args(["--dataset", "gsm8k", "--slm-backend", "transformers",
                                      "--slm", str(ckpt)])
    s = _settings_from_args(args)
    assert s.prices[s.slm.name] == s.prices["Qwen2.5-Coder-0.5B-Instruct"]
    assert "no price" not in capsys.readouterr().err

    # without --slm-backend a checkpoint folder picks its engine: a full-weight folder transformers
    args = build_parser().parse_args(["--dataset", "gsm8k", "--slm", str(ckpt)])
    assert _settings_from_args(args).slm.backend == "transformers"

    # an unknown hub id has no price: costed at 0, and the run says so
    args = build_parser().parse_args(["--dataset", "gsm8k", "--slm", "someone/unknown-model"])
    s = _settings_from_args(args)
    assert "someone/unknown-model" not in s.prices
    assert "no price for someone/unknown-model" in capsys.readouterr().err


@pytest.mark.parametrize("raw, want", [
    ("What is \x1b[31m38\x1b[0m + 31?", "What is 38 + 31?"),    # colours removed whole
    ("a\x1b]0;window title\x07b", "ab"),                           # OSC title
    ("x\x9b1;2Hy", "xy"),                                          # one-byte CSI
    ("reset\x1bc now", "reset now"),                              # two-character escape
    ("text with a literal [31m stays", "text with a literal [31m stays"),
    ("tabs\tand\nnewlines stay", "tabs\tand\nnewlines stay"),
])
def test_terminal_escapes_never_reach_the_model(raw, want):
    assert validate_question(raw, 4000) == want
