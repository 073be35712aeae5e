"""Rated turns pushed to a Hugging Face dataset (corea.export): against a local stand-in of the
Hub's HTTP API (tests/hub_standin.py) driven by the real ``huggingface_hub`` client: repository
creation, preupload + commit (files as regular blobs: LFS/Xet uploads are not emulated), file
download; then ``datasets.load_dataset`` reads the result back."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from corea.cli import main as cli_main
from corea.events import CascadeResult, DecisionInfo, ModelOutput
from corea.export.hub import HubPusher, HubPushError, HubTarget, push_ratings, write_local
from corea.export.records import ROW_FIELDS
from corea.store import Store
from corea.types import Message
from hub_standin import StandInHub

TOKEN = "hf_standin_secret_token"
REPO = "owner/corea-ratings"
SESSION = "sess-visitor-4242"


@pytest.fixture
def hub(tmp_path):
    h = StandInHub(tmp_path / "hub", TOKEN).start()
    yield h
    h.stop()


@pytest.fixture
def target(hub):
    return HubTarget(REPO, endpoint=hub.url)


def _kept(question: str, context=()) -> CascadeResult:
    slm = ModelOutput(model="tiny-slm", text="It is 4.\nConfidence: 90%", answer="4",
                      confidence=0.9, prompt_tokens=12, completion_tokens=7, latency_s=0.5)
    dec = DecisionInfo(defer=False, reason="confident", confidence=0.9, threshold=0.7,
                       message="kept")
    return CascadeResult(question=question, threshold=0.7, slm=slm, decision=dec,
                         final_answer="4", final_model="tiny-slm", context=list(context))


def _deferred(question: str, llm_model="big-llm", llm_error=None) -> CascadeResult:
    slm = ModelOutput(model="tiny-slm", text="Answer: 5\nConfidence: 20%", answer="5",
                      confidence=0.2)
    llm = ModelOutput(model=llm_model, text="Answer: 6", answer="6", completion_tokens=9,
                      error=llm_error)
    dec = DecisionInfo(defer=True, reason="low_confidence", confidence=0.2, threshold=0.7,
                       message="deferred")
    return CascadeResult(question=question, threshold=0.7, slm=slm, llm=llm, decision=dec,
                         final_answer="6", final_model=llm_model)


def _store(tmp_path, name="log.sqlite", n_rated=2, prefix="q") -> Store:
    """A log with ``n_rated`` rated turns (every other one deferred) and one unrated turn."""
    store = Store(f"sqlite:///{tmp_path / name}")
    for i in range(n_rated):
        make = _deferred if i % 2 else _kept
        iid = store.log_interaction(make(f"{prefix}{i}: what is 2+2?"), SESSION)
        store.add_rating(iid, "down" if i % 2 else "up", comment=f"comment {i}",
                         session_id=SESSION)
    store.log_interaction(_kept(f"{prefix}: unrated"), SESSION)
    return store


def _rows(hub, repo=REPO) -> list[dict]:
    """Every row of every shard in the stand-in's head."""
    files = hub.repos[repo].files
    shards = sorted(p for p in files if p.startswith("data/"))
    return [r for p in shards for r in pq.read_table(hub.folder(repo) / p).to_pylist()]


def test_push_holds_rated_turns_without_identity(tmp_path, hub, target):
    store = _store(tmp_path)
    iid = store.log_interaction(_kept("and 3+3?", [Message("user", "what is 2+2?"),
                                                    Message("assistant", "4")]), SESSION)
    store.add_rating(iid, "down", correction="6", session_id=SESSION)
    result = push_ratings(store, target, token=TOKEN)
    assert (result.pushed, result.already) == (3, 0)
    repo = hub.repos[REPO]
    assert repo.visibility == "private"
    assert sorted(repo.files) == ["README.md", result.shard]
    rows = _rows(hub)
    assert len(rows) == 3 and list(rows[0]) == list(ROW_FIELDS)
    assert {r["question"] for r in rows} == {"q0: what is 2+2?", "q1: what is 2+2?", "and 3+3?"}
    by_q = {r["question"]: r for r in rows}
    deferred = by_q["q1: what is 2+2?"]
    assert deferred["decision_defer"] and deferred["llm_answer"] == "6"
    assert deferred["rating_thumbs"] == "down" and deferred["rating_comment"] == "comment 1"
    assert [t["model"] for t in deferred["tiers"]] == ["tiny-slm", "big-llm"]
    assert deferred["tiers"][0]["decision"] == "deferred"
    assert deferred["tiers"][0]["stated_confidence"] == pytest.approx(0.2)
    assert by_q["q0: what is 2+2?"]["confidence"] == pytest.approx(0.9)
    assert by_q["and 3+3?"]["rating_correction"] == "6"
    assert by_q["and 3+3?"]["context"] == [{"role": "user", "content": "what is 2+2?"},
                                           {"role": "assistant", "content": "4"}]
    for path, data in repo.files.items():  # no identity, no secret, anywhere
        assert SESSION.encode() not in data and TOKEN.encode() not in data, path
    assert not any("session" in c or "key" in c or "user" in c for c in ROW_FIELDS)
    card = repo.files["README.md"].decode()
    assert card.startswith("---\n") and "path: data/*.parquet" in card
    assert "\nlicense:" not in card and "rating_thumbs" in card


def test_pushing_twice_adds_nothing_and_new_ratings_come_next(tmp_path, hub, target):
    store = _store(tmp_path)
    first = push_ratings(store, target, token=TOKEN)
    commits = list(hub.repos[REPO].commits)
    again = push_ratings(store, target, token=TOKEN)  # a fresh client: reads the repository
    assert (again.pushed, again.already, again.commit) == (0, 2, None)
    assert hub.repos[REPO].commits == commits
    iid = store.log_interaction(_kept("new one"), SESSION)
    store.add_rating(iid, "up")
    store.add_rating(1, "down", correction="5")  # a turn rated again: a new row
    third = push_ratings(store, target, token=TOKEN)
    assert (third.pushed, third.already) == (2, 2) and third.shard != first.shard
    rows = _rows(hub)
    assert len(rows) == 4 and len({r["record_id"] for r in rows}) == 4
    rerated = [r for r in rows if r["question"] == "q0: what is 2+2?"]
    assert len({r["interaction_uid"] for r in rerated}) == 1
    latest = max(rerated, key=lambda r: r["rated_at"])
    assert (latest["rating_thumbs"], latest["rating_correction"]) == ("down", "5")


@pytest.mark.parametrize("fault", ["fail_commits", "lose_replies"])
def test_interrupted_push_then_retry_has_every_rating_once(tmp_path, hub, target, fault):
    store = _store(tmp_path, n_rated=3)
    setattr(hub, fault, 1)
    with pytest.raises(HubPushError) as err:
        push_ratings(store, target, token=TOKEN)
    assert TOKEN not in str(err.value)
    assert len(_rows(hub)) == (3 if fault == "lose_replies" else 0)
    iid = store.log_interaction(_kept("rated during the outage"), SESSION)
    store.add_rating(iid, "up")
    retry = push_ratings(store, target, token=TOKEN)
    assert retry.pushed == (1 if fault == "lose_replies" else 4)
    rows = _rows(hub)
    assert len(rows) == 4 and len({r["record_id"] for r in rows}) == 4
    assert push_ratings(store, target, token=TOKEN).pushed == 0


def test_restart_with_an_empty_log_keeps_the_earlier_rows(tmp_path, hub, target):
    push_ratings(_store(tmp_path, "first.sqlite"), target, token=TOKEN)
    second = _store(tmp_path, "second.sqlite")  # same ids 1, 2, same questions, later times
    assert push_ratings(second, target, token=TOKEN).pushed == 2
    assert len({r["record_id"] for r in _rows(hub)}) == 4


def test_a_commit_on_a_stale_head_is_refused_then_retried(tmp_path, hub, target):
    store = _store(tmp_path)
    pusher = HubPusher(target, lambda: store, every_s=3600, token=TOKEN)
    remote = pusher._remote  # noqa: SLF001 -- the test interposes another writer
    read_head = remote.head

    def head_then_another_writer():
        seen = read_head()
        hub.apply(REPO, "another writer", {"notes.txt": b"x"})
        return seen

    remote.head = head_then_another_writer
    assert pusher.push_now() is None and "412" in pusher.last_error
    assert _rows(hub) == []
    remote.head = read_head
    assert pusher.push_now().pushed == 2 and len(_rows(hub)) == 2


def test_load_dataset_reads_the_pushed_rows(tmp_path, hub, target):
    from datasets import load_dataset
    from huggingface_hub import HfApi, hf_hub_download

    store = _store(tmp_path, n_rated=3)
    push_ratings(store, target, token=TOKEN)
    iid = store.log_interaction(_deferred("later"), SESSION)
    store.add_rating(iid, "up")
    push_ratings(store, target, token=TOKEN)
    info = HfApi(endpoint=hub.url, token=TOKEN).dataset_info(REPO)
    files = [s.rfilename for s in info.siblings]
    local = tmp_path / "download"
    for f in files:
        hf_hub_download(REPO, f, repo_type="dataset", local_dir=local, endpoint=hub.url,
                        token=TOKEN)
    shards = sorted(str(p) for p in (local / "data").glob("*.parquet"))
    assert len(shards) == 2
    ds = load_dataset("parquet", data_files=shards, split="train",
                      cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 4 and ds.column_names == list(ROW_FIELDS)
    assert sorted(ds["question"]) == sorted(["q0: what is 2+2?", "q1: what is 2+2?",
                                             "q2: what is 2+2?", "later"])
    later = ds[ds["question"].index("later")]
    assert later["decision_defer"] and later["final_answer"] == "6"
    assert [t["model"] for t in later["tiers"]] == ["tiny-slm", "big-llm"]
    assert ds.features["tiers"].feature["model"].dtype == "string"
    by_card = load_dataset(str(local), split="train", cache_dir=str(tmp_path / "cache2"))
    assert by_card.num_rows == 4  # the card's configs/data_files point at data/*.parquet


def test_pusher_tick_final_push_and_unavailable_log(tmp_path, hub, target):
    pusher = HubPusher(target, lambda: None, every_s=3600, token=TOKEN)
    assert pusher.push_now() is None and pusher.last_error == "the log is not available"
    store = _store(tmp_path)
    pusher = HubPusher(target, lambda: store, every_s=3600, token=TOKEN).start()
    pusher.stop()  # the last push at stop
    assert pusher.last is not None and pusher.last.pushed == 2 and len(_rows(hub)) == 2
    hub.fail_commits = 1
    store.add_rating(1, "down")
    assert pusher.push_now() is None and "500" in pusher.last_error
    assert TOKEN not in pusher.last_error and "Bearer ***" in pusher.last_error  # echoed
    assert pusher.push_now().pushed == 1
    with pytest.raises(ValueError):
        HubPusher(target, lambda: store, every_s=0)


def test_cli_dry_run_and_push(tmp_path, hub, monkeypatch, capsys):
    store = _store(tmp_path)
    store.close()
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    monkeypatch.delenv("COREA_HUB_DATASET", raising=False)
    monkeypatch.setenv("COREA_HUB_TOKEN", TOKEN)
    assert cli_main(["push-ratings", "--db-url", db]) == 2
    assert "COREA_HUB_DATASET" in capsys.readouterr().err
    out = tmp_path / "dry"
    assert cli_main(["push-ratings", "--db-url", db, "--dry-run", str(out)]) == 0
    (shard,) = (out / "data").glob("*.parquet")
    assert pq.read_table(shard).num_rows == 2 and (out / "README.md").is_file()
    assert not hub.repos
    args = ["push-ratings", "--db-url", db, "--dataset", REPO, "--endpoint", hub.url]
    assert cli_main(args) == 0
    assert "pushed 2 rated turns" in capsys.readouterr().out
    assert cli_main(args) == 0 and "nothing new" in capsys.readouterr().out
    monkeypatch.setenv("COREA_HUB_TOKEN", "wrong")
    assert cli_main(args) == 1
    captured = capsys.readouterr()
    assert "401" in captured.err and TOKEN not in captured.out + captured.err


def test_no_server_path_in_model_names_or_errors(tmp_path, target, hub):
    store = Store(f"sqlite:///{tmp_path / 'paths.sqlite'}")
    model = "/home/owner/models/big-llm.gguf"
    result = _deferred("with paths", model, f"cannot read {model}")
    store.add_rating(store.log_interaction(result, SESSION), "up")
    push_ratings(store, target, token=TOKEN)
    (row,) = _rows(hub)
    assert row["final_model"] == "big-llm.gguf" and row["tiers"][1]["model"] == "big-llm.gguf"
    assert row["tiers"][1]["error"] == "cannot read <path>"
    assert all(b"/home/owner" not in data for data in hub.repos[REPO].files.values())


def test_write_local_with_license(tmp_path):
    shard = write_local(_store(tmp_path), tmp_path / "out", REPO, license_id="cc-by-4.0")
    assert "\nlicense: cc-by-4.0\n" in (tmp_path / "out" / "README.md").read_text()
    assert pq.read_table(shard).num_rows == 2


def test_app_starts_a_pusher_only_when_configured(tmp_path, hub):
    import atexit

    from corea.config import load_settings
    from corea.export.hub import start_pusher

    store = _store(tmp_path)
    assert start_pusher(load_settings(hub_dataset=None), lambda: store) is None
    settings = load_settings(hub_dataset=REPO, hub_endpoint=hub.url, hub_push_every_s=3600)
    pusher = start_pusher(settings, lambda: store)
    atexit.unregister(pusher.stop)
    assert pusher.target == HubTarget(REPO, hub.url, True, None) and pusher.every_s == 3600
    pusher.stop(final_push=False)
    assert not hub.repos
