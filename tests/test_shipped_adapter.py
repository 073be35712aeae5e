"""A calibration adapter shipped for the embedded SLM (``corea/assets/adapters/``): how the
settings swap it in (``use_shipped_adapter``), its name and price, and the llama.cpp plumbing that
resolves its symbolic model id. The real adapter's own checks run when one ships."""

from __future__ import annotations

import json

import pytest

from corea import adapters
from corea.backends.lora_gguf import base_gguf, is_adapter_dir
from corea.config import CALIBRATED_SLM, EMBEDDED_SLM, Settings


@pytest.fixture
def fake_shipped(tmp_path, monkeypatch):
    """A shipped-adapter folder for the embedded SLM under a temporary assets root."""
    d = tmp_path / "adapters" / "qwen2.5-coder-0.5b-instruct"
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"],
        "base_model_name_or_path": EMBEDDED_SLM}))
    (d / "card.json").write_text(json.dumps({"name": "COREA calibration adapter v9"}))
    monkeypatch.setattr(adapters, "SHIPPED", tmp_path / "adapters")
    return d


def test_no_shipped_adapter_leaves_the_slm_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(adapters, "SHIPPED", tmp_path / "none")
    s = Settings(db_url="sqlite://", use_shipped_adapter=True)
    assert s.slm.model == EMBEDDED_SLM and s.slm.name == "Qwen2.5-Coder-0.5B-Instruct"
    assert not is_adapter_dir(CALIBRATED_SLM)
    with pytest.raises(FileNotFoundError, match="no calibration adapter ships"):
        adapters.resolve_adapter(CALIBRATED_SLM)


def test_the_shipped_adapter_replaces_the_embedded_slm_on_llamacpp(fake_shipped):
    s = Settings(db_url="sqlite://", use_shipped_adapter=True)
    assert s.slm.model == CALIBRATED_SLM
    assert s.slm.name == "Qwen2.5-Coder-0.5B-Instruct + COREA calibration adapter v9"
    assert s.prices[s.slm.name] == s.prices["Qwen2.5-Coder-0.5B-Instruct"]  # the base's price
    assert is_adapter_dir(CALIBRATED_SLM)
    assert adapters.resolve_adapter(CALIBRATED_SLM) == fake_shipped
    # the option turns it off; another engine or model keeps what it names
    assert Settings(db_url="sqlite://", use_shipped_adapter=False).slm.model == EMBEDDED_SLM
    t = Settings(db_url="sqlite://", use_shipped_adapter=True,
                 slm={"backend": "transformers", "model": EMBEDDED_SLM})
    assert t.slm.model == EMBEDDED_SLM
    o = Settings(db_url="sqlite://", use_shipped_adapter=True, slm={"model": "other.gguf"})
    assert o.slm.model == "other.gguf"


def test_the_environment_turns_the_shipped_adapter_on_and_off(fake_shipped, monkeypatch):
    monkeypatch.setenv("COREA_USE_SHIPPED_ADAPTER", "true")
    assert Settings(db_url="sqlite://").slm.model == CALIBRATED_SLM
    monkeypatch.setenv("COREA_USE_SHIPPED_ADAPTER", "false")
    assert Settings(db_url="sqlite://").slm.model == EMBEDDED_SLM


def test_the_symbolic_id_resolves_to_the_embedded_gguf_base(fake_shipped):
    from corea.backends.weights import resolve_gguf

    try:
        want = resolve_gguf(EMBEDDED_SLM, "~/.cache/corea")
    except Exception as e:  # noqa: BLE001 — the embedded weights package is missing
        pytest.skip(f"embedded SLM weights unavailable: {e}")
    assert base_gguf(CALIBRATED_SLM, "~/.cache/corea") == want


def test_the_real_shipped_adapter_has_a_card_from_train_data():
    d = adapters.shipped_adapter_dir()
    if d is None:
        pytest.skip("no calibration adapter ships in this checkout")
    card = adapters.adapter_card(d)
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == EMBEDDED_SLM and cfg["peft_type"] == "LORA"
    assert (d / "adapter_model.safetensors").stat().st_size < 20_000_000
    assert card["name"] and card["version"] and card["command"] and card["trained_at"]
    assert card["data"] and all("/train" in x or "train-" in x for x in card["data"])
    assert card["test"]["gsm8k"]["after"]["ece_10"] < card["test"]["gsm8k"]["before"]["ece_10"]


def test_ship_adapter_writes_a_portable_folder_and_a_card(tmp_path):
    """train.ship_adapter: the base becomes embedded:slm, the card carries the train data, steps
    and the held-out before/after; a train-split run is refused as a "test"."""
    from train.ship_adapter import main

    run = tmp_path / "run"
    (run / "checkpoint-7").mkdir(parents=True)
    (run / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"],
        "base_model_name_or_path": "/home/someone/.cache/corea/hf/Qwen"}))
    (run / "adapter_model.safetensors").write_bytes(b"weights")
    (run / "train_ids.json").write_text(json.dumps(["gsm8k-train-00001", "gsm8k-train-00002"]))
    (run / "data_args.json").write_text(json.dumps({"samples": False, "limit": None}))
    (run / "checkpoint-7" / "trainer_state.json").write_text(json.dumps({"global_step": 7}))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("runs: [data/generations/gsm8k-train-1000]\nlearning_rate: 5.0e-4\n")

    def test_run(name, conf, split="test"):
        d = tmp_path / name
        d.mkdir()
        rows = [{"id": f"q{i}", "question": "?", "gold": "1", "slm_correct": i % 3 == 0,
                 "slm": {"confidence": conf(i), "confidence_method": "free"}}
                for i in range(30)]
        (d / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "run.json").write_text(json.dumps({"split": split, "dataset": "gsm8k"}))
        return str(d)

    before = test_run("before", lambda i: 0.9)
    after = test_run("after", lambda i: 0.6 if i % 3 == 0 else 0.2)
    out = tmp_path / "shipped"
    assert main([str(run), "--out", str(out), "--version", "v1", "--recipe", str(recipe),
                 "--test", f"gsm8k={before}:{after}"]) == 0
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == EMBEDDED_SLM
    assert (out / "adapter_model.safetensors").read_bytes() == b"weights"
    card = adapters.adapter_card(out)
    assert card["name"] == "COREA calibration adapter v1" and card["steps"] == 7
    assert card["data"] == ["data/generations/gsm8k-train-1000"] and card["n_train_questions"] == 2
    # the regenerate command selects the same questions (copied with it), as trained
    assert (out / "train_ids.json").read_text() == (run / "train_ids.json").read_text()
    assert card["command"] == (f"python -m train.confidence --config {recipe} --question_ids "
                               f"{out.as_posix()}/train_ids.json --samples false")
    g = card["test"]["gsm8k"]
    assert g["n"] == 30 and g["after"]["ece_10"] < g["before"]["ece_10"]
    assert g["after"]["auroc"] == 1.0 and g["before"]["auroc"] == 0.5
    assert "| ECE (10 bins) |" in (out / "README.md").read_text()
    assert card["scope"] == "all" == adapters.adapter_scope(out)
    adapters.write_adapter_scope(run, "confidence")  # a confidence-scoped run keeps its scope
    assert main([str(run), "--out", str(out), "--version", "v1", "--recipe", str(recipe),
                 "--test", f"gsm8k={before}:{after}"]) == 0
    assert adapters.adapter_scope(out) == "confidence" == adapters.adapter_card(out)["scope"]
    assert "Scope: the confidence line only" in (out / "README.md").read_text()
    bad = test_run("train-run", lambda i: 0.5, split="train")
    assert main([str(run), "--out", str(out), "--version", "v1", "--recipe", str(recipe),
                 "--test", f"gsm8k={bad}:{after}"]) == 2


def test_the_shipped_adapter_is_the_default_with_its_own_calibrator(monkeypatch):
    """Without any setting, a fresh install runs the embedded SLM with its shipped calibration
    adapter (confidence-scoped: the solution stays the base's) and decides with the calibrator
    shipped for that adapted SLM, which reads no stated confidence."""
    from corea.signals.calibrator import TOKEN_FEATURES, load_plain, shipped_calibrator_dir

    d = adapters.shipped_adapter_dir()
    if d is None:
        pytest.skip("no calibration adapter ships in this checkout")
    monkeypatch.delenv("COREA_USE_SHIPPED_ADAPTER", raising=False)
    s = Settings(db_url="sqlite://")
    assert s.slm.model == CALIBRATED_SLM and "calibration adapter" in s.slm.name
    assert adapters.adapter_scope(d) == "confidence" == adapters.adapter_card(d)["scope"]
    cal_dir = shipped_calibrator_dir(s.slm.name)
    assert cal_dir is not None
    cal = load_plain(cal_dir)
    assert cal.card.slm == s.slm.name and cal.card.features == list(TOKEN_FEATURES)
    assert all("train" in src for src in cal.card.sources)


def test_the_shipped_adapter_card_regenerates_on_the_same_examples():
    """The card's regenerate command trains on exactly the shipped adapter's 327 questions,
    without sampled solutions (none existed then); the recipe alone would now take 602
    questions and their samples."""
    import shlex

    from train.confidence import ConfidenceArguments, load_examples

    folder = adapters.SHIPPED / "qwen2.5-coder-0.5b-instruct"
    card = adapters.adapter_card(folder)
    argv = shlex.split(card["command"])
    assert argv[:3] == ["python", "-m", "train.confidence"]
    opts = dict(zip(argv[3::2], argv[4::2]))
    ids = json.loads((folder / "train_ids.json").read_text())
    assert len(ids) == card["n_train_questions"] == 327
    args = ConfidenceArguments(adapter_scope="confidence",
                               question_ids=opts["--question_ids"],
                               samples=opts.get("--samples", "true") == "true")
    ex = load_examples(args, 0)
    assert len(ex) == 327 and {e.id.split("#")[0] for e in ex} == set(ids)
    # steps: 327 examples, batch 2, 4 accumulation steps, 5 epochs
    assert -(-len(ex) // 2) // 4 * 5 == card["steps"]
    everything = load_examples(ConfidenceArguments(adapter_scope="confidence"), 0)
    assert len({e.id.split("#")[0] for e in everything}) > 327
