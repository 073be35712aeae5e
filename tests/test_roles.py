"""Visitors and owners (corea.auth) and what a visitor may read (corea.redact), on the handlers
directly: scripted backends, a temporary database, fake requests with a session hash."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from corea.auth import OWNER_ONLY, Roles
from corea.backends.fake import FakeBackend
from corea.config import Settings
from corea.redact import describe_db, plain_error, redact
from corea.service import CoreaService
from corea.ui.ask import AskHandlers, TurnView
from corea.ui.calibration import CalibrationHandlers
from corea.ui.explorer import INTERACTIONS, ExplorerHandlers
from corea.ui.history import HistoryHandlers
from corea.ui.training import TrainingHandlers

PUBLIC = dict(host="0.0.0.0", on_space=False)


def req(session):
    return SimpleNamespace(session_hash=session)


def service(tmp_path, **kw):
    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'log.sqlite'}", **kw)
    return CoreaService(settings,
                        slm=FakeBackend(["\\boxed{4}\nConfidence: 0.9"], model_name="slm"),
                        llm=FakeBackend(["\\boxed{5}"], model_name="llm"))


def ask(h, question, session):
    return list(h.respond(question, [], 0.7, [], req(session)))[-1]


# ------------------------------------------------------------------------------------ roles

def test_no_owner_configured_means_a_one_time_token_not_an_address():
    roles = Roles(host="127.0.0.1", on_space=False)
    assert roles.generated and roles.token_sign_in and not roles.configured
    from_here = SimpleNamespace(session_hash="a", client=SimpleNamespace(host="127.0.0.1"),
                                headers={})
    assert not roles.is_owner(from_here) and roles.refuse(from_here) == OWNER_ONLY
    assert "console" in roles.banner()
    link = roles.sign_in_url(7860)
    token = link.split("?token=", 1)[1]
    assert link.startswith("http://127.0.0.1:7860/?token=") and len(token) >= 40
    assert token not in roles.banner()
    assert Roles(host="127.0.0.1", on_space=False).sign_in_url(7860) != link  # one per start
    # the console link signs this page load in, and only it
    page = SimpleNamespace(session_hash="a", query_params={"token": token})
    assert roles.sign_in_from_url(page)[0] and roles.who(from_here).how == "token"
    assert not roles.is_owner(req("b"))
    assert roles.sign_in_from_url(req("c")) is None  # no token in the address: nothing tried
    # a configured token or OAuth list: no generated token, and it is never printed
    assert not Roles(token="t", on_space=False).generated
    assert Roles(token="t", on_space=False).sign_in_url(7860) is None
    assert not any("s3cret" in line for line in Roles(token="s3cret").console_lines(7860))
    assert not Roles(owners=["alice"], on_space=True).token_sign_in
    assert Roles(**PUBLIC).is_owner(None)  # in-process callers (tests, CLI) are trusted


def test_console_lines_carry_the_link_once(capsys):
    roles = Roles(host="0.0.0.0", on_space=False)
    lines = roles.console_lines(8080)
    token = roles.sign_in_url(8080).split("=", 1)[1]
    assert sum(token in line for line in lines) == 1
    assert "http://127.0.0.1:8080/?token=" in "\n".join(lines)  # a wildcard bind: open locally
    assert "[::1]:80/" in Roles(host="::1").sign_in_url(80)


def test_on_a_space_the_link_is_the_space_address(monkeypatch):
    monkeypatch.setenv("SPACE_HOST", "someone-corea.hf.space")
    link = Roles(host="0.0.0.0", on_space=True).sign_in_url(7860)
    assert link.startswith("https://someone-corea.hf.space/?token=")


def test_owner_token_signs_in_one_browser_session_only():
    roles = Roles(token="s3cret-token", **PUBLIC)
    assert roles.token_sign_in and not roles.oauth_sign_in
    ok, msg = roles.sign_in("wrong", req("a"))
    assert not ok and "Wrong" in msg and not roles.is_owner(req("a"))
    ok, msg = roles.sign_in(" s3cret-token ", req("a"))
    assert ok and roles.who(req("a")).how == "token"
    assert not roles.is_owner(req("b"))  # another browser is still a visitor
    roles.sign_out(req("a"))
    assert not roles.is_owner(req("a"))


def test_token_guessing_is_throttled():
    roles = Roles(token="right", **PUBLIC)
    for _ in range(5):
        assert not roles.sign_in("guess", req("x"))[0]
    ok, msg = roles.sign_in("right", req("x"))
    assert not ok and "Too many" in msg
    # per client, not per page load: a reload (a new session) from the same address is still
    # locked, another address is not
    here = dict(client=SimpleNamespace(host="203.0.113.7"), headers={})
    for i in range(5):
        assert not roles.sign_in("guess", SimpleNamespace(session_hash=f"r{i}", **here))[0]
    ok, msg = roles.sign_in("right", SimpleNamespace(session_hash="reload", **here))
    assert not ok and "Too many" in msg
    other = SimpleNamespace(session_hash="o", client=SimpleNamespace(host="203.0.113.8"),
                            headers={})
    assert roles.sign_in("right", other)[0]


def test_oauth_usernames_from_the_session(monkeypatch):
    roles = Roles(owners=["Alice", " "], **{**PUBLIC, "on_space": True})
    assert roles.oauth_sign_in and roles.owners == {"alice"}
    import corea.auth as auth

    monkeypatch.setattr(auth, "_oauth_username", lambda r: getattr(r, "user", None))
    alice = SimpleNamespace(session_hash="a", user="alice")
    bob = SimpleNamespace(session_hash="b", user="bob")
    assert roles.who(alice).how == "oauth" and roles.who(alice).name == "alice"
    assert not roles.is_owner(bob)


def test_roles_from_env(monkeypatch):
    monkeypatch.setenv("COREA_OWNERS", "alice,bob")
    monkeypatch.setenv("COREA_OWNER_TOKEN", "tok")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("COREA_TRUSTED_PROXIES", "10.0.0.0/8")
    r = Roles.from_env()
    assert r.owners == {"alice", "bob"} and r.token_sign_in and r.configured
    assert "10.1.2.3" in r.trusted


# ---------------------------------------------------------------------------------- redaction

@pytest.mark.parametrize("url, public, owner", [
    ("postgresql+psycopg://corea:hunter2@db.example.com:5432/corea",
     "PostgreSQL at db.example.com", "PostgreSQL at db.example.com:5432, database `corea`"),
    ("sqlite:////data/corea.sqlite", "SQLite file", "SQLite file `/data/corea.sqlite`"),
    ("sqlite://", "in-memory SQLite", "in-memory SQLite"),
    ("mysql+pymysql://u:p@mysql.internal/x", "MySQL at mysql.internal", None),
    ("not a url", "an unrecognised database URL", None),
])
def test_database_shown_without_credentials(url, public, owner):
    assert describe_db(url) == public
    if owner is not None:
        assert describe_db(url, detail=True) == owner
    assert "hunter2" not in describe_db(url, detail=True)
    assert "corea:" not in describe_db(url, detail=True)


def test_redact_urls_and_paths_not_arithmetic():
    text = ("connection to http://10.0.0.5:8000/v1/chat failed; weights at "
            "/home/app/.cache/corea/slm.gguf and ~/x/y; 48 / 2 = 24 and 1/2 of it")
    out = redact(text)
    assert "10.0.0.5" not in out and "/home/app" not in out and "~/x" not in out
    assert "<internal URL>" in out and "<path>" in out
    assert "48 / 2 = 24" in out and "1/2" in out
    assert plain_error("large", "ConnectError: http://llm:8000 refused") == \
        "The large model is unreachable — showing the small model's answer."
    assert plain_error("small", "timeout after 30 s") == "The small model took too long to answer."


def test_turn_view_tells_visitors_in_plain_words():
    from corea.events import LLMDone, LLMStarted, ModelOutput

    h = []
    view = TurnView(h, 0.7, public=True)
    view.apply(LLMStarted(model="llm"))
    view.apply(LLMDone(output=ModelOutput(model="llm",
                                          error="connection refused: http://10.1.2.3:9/v1")))
    assert "10.1.2.3" not in h[-1]["content"] and "unreachable" in h[-1]["content"]
    owner = TurnView([], 0.7)
    owner.apply(LLMStarted(model="llm"))
    owner.apply(LLMDone(output=ModelOutput(model="llm", error="refused: http://10.1.2.3:9/v1")))
    assert "10.1.2.3" in owner.history[-1]["content"]


def test_model_panel_never_shows_a_password(tmp_path):
    svc = service(tmp_path)
    svc.settings = svc.settings.model_copy(
        update={"db_url": "postgresql+psycopg://corea:hunter2@db.example.com/corea"})
    h = AskHandlers(svc, roles=Roles(token="t", **PUBLIC))
    visitor = h.model_info(req("v"))
    assert "PostgreSQL at db.example.com" in visitor and "hunter2" not in visitor
    assert "corea@" not in visitor and "hunter2" not in h.model_info(None)
    svc.store, svc.logging_error = None, "Logging is off: database postgresql://corea:***@db/x"
    visitor = h.model_info(req("v"))
    assert "**off**" in visitor and "***" not in visitor and "postgresql://" not in visitor


# ----------------------------------------------------------------------------- isolation

def test_visitors_see_rate_and_export_only_their_own_turns(tmp_path):
    svc = service(tmp_path)
    roles = Roles(token="t", **PUBLIC)
    a = AskHandlers(svc, roles=roles)
    ask(a, "My IBAN is DE89 3704 0044 0532 0130 00, what is 2+2?", "alice")
    ask(a, "What is 3+3?", "bob")
    assert a.rate("up", 1, "", "", req("alice")).startswith("Saved rating")
    assert a.rate("up", 2, "", "bob's comment", req("bob")).startswith("Saved rating")
    # bob cannot rate alice's row, nor learn whether it exists
    msg = a.rate("down", 1, "5", "", req("bob"))
    assert msg == "⚠️ no interaction with id 1 in this session"
    assert svc.store.get_interaction(1)["rating_thumbs"] == "up"

    hist = HistoryHandlers(svc, roles=roles)
    rows, status = hist.history_table("All", "All", "", req("bob"))
    assert [r[0] for r in rows] == [2] and "this browser session" in status
    assert [r[0] for r in hist.history_table("All", "All", "", req("eve"))[0]] == []
    path, status = hist.export_jsonl(req("bob"))
    lines = [json.loads(x) for x in open(path, encoding="utf-8")]
    assert [x["id"] for x in lines] == [2] and "IBAN" not in open(path).read()
    # an owner (token) sees everyone's
    roles.sign_in("t", req("owner"))
    assert {r[0] for r in hist.history_table("All", "All", "", req("owner"))[0]} == {1, 2}
    assert a.rate("down", 1, "", "owner note", req("owner")).startswith("Saved rating")

    ex = ExplorerHandlers(svc, runs_root=tmp_path / "runs", roles=roles)
    assert "1 row(s)" in ex.view(INTERACTIONS, 0.7, req("bob"))[4]
    assert "No rated interactions yet" in ex.view(INTERACTIONS, 0.7, req("eve"))[4]
    assert "2 row(s)" in ex.view(INTERACTIONS, 0.7, req("owner"))[4]


def test_visitor_cannot_train_switch_or_fit(tmp_path):
    svc = service(tmp_path)
    roles = Roles(token="t", **PUBLIC)
    before = svc.settings.slm.name
    tr = TrainingHandlers(svc, runs_root=tmp_path / "runs", roles=roles)
    v = req("visitor")
    assert tr.start("cpu-smoke", "", 1, 2, 1, 1, 1, v)[0] == OWNER_ONLY
    assert tr.stop(1, v) == OWNER_ONLY
    assert tr.use_as_slm(str(tmp_path), v) == OWNER_ONLY
    assert tr.evaluate(str(tmp_path), 5, v) == OWNER_ONLY
    assert tr.view(1, v)[0] == OWNER_ONLY and tr.run_choices(v) == []
    assert all(u == {"__type__": "update"} for u in tr.live(1, v))
    assert svc.settings.slm.name == before and svc.store.list_jobs() == []
    cb = CalibrationHandlers(svc, runs_root=tmp_path / "runs", roles=roles)
    assert cb.fit([], True, "logistic", v) == (OWNER_ONLY, "")
    assert cb.switch("anything", v)[1] == OWNER_ONLY


def client(session, address="198.51.100.1", **headers):
    return SimpleNamespace(session_hash=session, client=SimpleNamespace(host=address),
                           headers=headers)


def ask_from(h, question, request):
    return list(h.respond(question, [], 0.7, [], request))[-1]


def test_question_rate_limit_per_client_not_per_session(tmp_path):
    svc = service(tmp_path, questions_per_minute=2)
    h = AskHandlers(svc, roles=Roles(**PUBLIC))
    ask_from(h, "q1", client("a"))
    ask_from(h, "q2", client("a"))
    with pytest.warns(UserWarning, match="asking too fast: at most 2 questions a minute"):
        out = ask_from(h, "q3", client("a"))
    assert out[1] == "q3" and svc.store.count() == 2  # the question stays in the box
    # a reload (a new browser session) from the same address shares the allowance
    with pytest.warns(UserWarning, match="asking too fast"):
        ask_from(h, "q3", client("reloaded"))
    # a made-up X-Forwarded-For from an untrusted peer changes nothing
    with pytest.warns(UserWarning, match="asking too fast"):
        ask_from(h, "q3", client("c", **{"x-forwarded-for": "192.0.2.99"}))
    assert svc.store.count() == 2
    ask_from(h, "q1", client("b", address="198.51.100.2"))  # another client has its own
    assert svc.store.count() == 3
    roles = Roles(token="t", **PUBLIC)
    owner = AskHandlers(svc, roles=roles)
    roles.sign_in("t", client("o"))
    for i in range(3):
        ask_from(owner, f"o{i}", client("o"))  # owners are not limited
    assert svc.store.count() == 6


def test_limit_through_a_trusted_proxy_counts_the_forwarded_client(tmp_path):
    svc = service(tmp_path, questions_per_minute=1, trusted_proxies="127.0.0.1")
    h = AskHandlers(svc)  # the trusted proxies come from the settings
    proxy = "127.0.0.1"
    ask_from(h, "q1", client("a", proxy, **{"x-forwarded-for": "192.0.2.1"}))
    # nginx appends: a client's own header value stays on the left and is not believed
    ask_from(h, "q1", client("b", proxy, **{"x-forwarded-for": "192.0.2.9, 192.0.2.2"}))
    assert svc.store.count() == 2
    with pytest.warns(UserWarning, match="asking too fast"):
        ask_from(h, "q2", client("c", proxy, **{"x-forwarded-for": "10.9.9.9, 192.0.2.1"}))
    assert svc.store.count() == 2


def test_queue_size_comes_from_settings(tmp_path):
    import app

    demo = app.build_demo(service(tmp_path, queue_size=5))
    assert demo._queue.max_size == 5
