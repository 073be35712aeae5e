"""Tests for corea.datasets on the real files in ../shared/data and on small temp files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corea.datasets import KNOWN_DATASETS, Item, load_dataset

DATA_DIR = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(),
                                reason=f"benchmark data folder {DATA_DIR} is absent")

EXPECTED = {("gsm8k", "train"): 7473, ("gsm8k", "test"): 1319, ("math500", "test"): 500,
            ("arc_challenge", "test"): 1172, ("bbh_mc", "test"): 1926, ("svamp", "test"): 1000}


@needs_data
@pytest.mark.parametrize("name,split", sorted(EXPECTED))
def test_real_counts_and_fields(name, split):
    items = load_dataset(name, split, data_dir=DATA_DIR)
    assert len(items) == EXPECTED[(name, split)]
    assert len({it.id for it in items}) == len(items)
    for it in items:
        assert isinstance(it, Item) and it.dataset == name and it.question and it.answer
    if name in ("arc_challenge", "bbh_mc"):
        assert all(it.choices and it.answer in "ABCDEFGHIJKLMNOPQR"[:len(it.choices)] for it in items)
    else:
        assert all(it.choices is None for it in items)


@needs_data
def test_mc_answer_is_letter_from_answer_index():
    rows = [json.loads(l) for l in (DATA_DIR / "arc_challenge" / "test.jsonl").open()][:50]
    items = load_dataset("arc_challenge", data_dir=DATA_DIR, limit=50)
    for row, it in zip(rows, items):
        assert it.answer == "ABCDE"[row["answer_index"]]
        assert it.choices[row["answer_index"]] == row["answer_text"]
    assert items[0].id == "Mercury_7175875" and items[0].answer == "C"


@needs_data
def test_known_values():
    assert load_dataset("gsm8k", data_dir=DATA_DIR, limit=1)[0].answer == "18"
    assert load_dataset("svamp", data_dir=DATA_DIR, limit=1)[0].answer == "51"
    assert load_dataset("math500", data_dir=DATA_DIR, limit=1)[0].answer == r"\left( 3, \frac{\pi}{2} \right)"


@needs_data
def test_limit_and_seed_reproducible():
    first = load_dataset("svamp", data_dir=DATA_DIR, limit=5)
    assert [it.id for it in first] == [f"svamp-chal-{i}" for i in range(1, 6)]
    a = load_dataset("svamp", data_dir=DATA_DIR, limit=20, seed=3)
    b = load_dataset("svamp", data_dir=DATA_DIR, limit=20, seed=3)
    c = load_dataset("svamp", data_dir=DATA_DIR, limit=20, seed=4)
    assert a == b and a != c and len(a) == 20
    ids = [it.id for it in load_dataset("svamp", data_dir=DATA_DIR)]
    assert [ids.index(it.id) for it in a] == sorted(ids.index(it.id) for it in a)  # file order
    assert len(load_dataset("svamp", data_dir=DATA_DIR, limit=10_000)) == 1000


@needs_data
def test_env_var_data_dir(monkeypatch):
    monkeypatch.setenv("COREA_DATA_DIR", str(DATA_DIR))
    assert len(load_dataset("math500", limit=3)) == 3


def test_missing_file_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "gsm8k" / "dev.jsonl")):
        load_dataset("gsm8k", "dev", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_dataset(str(tmp_path / "nope.jsonl"))


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mmlu")
    assert "gsm8k" in KNOWN_DATASETS


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_user_jsonl(tmp_path):
    p = _write(tmp_path / "mine.jsonl", [
        {"question": "1+1?", "answer": 2},
        "",
        {"id": "q2", "question": "Pick", "choices": ["x", "y"], "answer": "y"},
        {"question": "Pick", "choices": ["x", "y"], "answer_index": 0},
        {"question": "Pick", "choices": ["x", "y"], "answer": "b"},
    ])
    items = load_dataset(str(p))
    assert [it.answer for it in items] == ["2", "B", "A", "B"]
    assert items[0].id == "mine-00001" and items[1].id == "q2" and items[0].dataset == "mine"
    assert items[1].choices == ("x", "y")


def test_row_missing_field_reports_line(tmp_path):
    p = _write(tmp_path / "bad.jsonl", [{"question": "a", "answer": "1"}, {"question": "b"}])
    with pytest.raises(ValueError, match=r"bad.jsonl:2: row is missing answer"):
        load_dataset(str(p))
    p = _write(tmp_path / "bad2.jsonl", [{"answer": "1"}])
    with pytest.raises(ValueError, match=r"bad2.jsonl:1: row is missing question"):
        load_dataset(str(p))
    p = _write(tmp_path / "bad3.jsonl", ["{not json"])
    with pytest.raises(ValueError, match=r"bad3.jsonl:1: invalid JSON"):
        load_dataset(str(p))
    p = _write(tmp_path / "bad4.jsonl", [{"question": "q", "choices": ["x"], "answer": "zz"}])
    with pytest.raises(ValueError, match=r"bad4.jsonl:1: multiple-choice answer"):
        load_dataset(str(p))


def test_hf_offline_gives_clear_error(monkeypatch):
    import sys
    import types

    def boom(*a, **k):
        raise ConnectionError("offline")

    # A stand-in for the `datasets` package: the real one is slow to import and needs the network.
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=boom))
    with pytest.raises(RuntimeError, match="Hugging Face hub"):
        load_dataset("hf:openai/gsm8k:main")


def test_hf_rows_are_mapped(monkeypatch):
    import sys
    import types

    rows = [{"question": "q", "answer": "work <<1+1=2>>\n#### 1,080"}, {"problem": "p", "answer": "\\frac12"}]
    fake = types.SimpleNamespace(load_dataset=lambda name, config, split: rows)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    items = load_dataset("hf:x/y", split="test")
    assert [it.answer for it in items] == ["1080", "\\frac12"] and items[1].question == "p"


def test_hf_arc_layout(monkeypatch):
    import sys
    import types

    rows = [{"id": "a1", "question": "q", "answerKey": "3",
             "choices": {"text": ["x", "y", "z"], "label": ["1", "2", "3"]}}]
    monkeypatch.setitem(sys.modules, "datasets",
                        types.SimpleNamespace(load_dataset=lambda name, config, split: rows))
    (it,) = load_dataset("hf:allenai/ai2_arc:ARC-Challenge")
    assert it.answer == "C" and it.choices == ("x", "y", "z") and it.id == "a1"
