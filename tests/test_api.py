"""The OpenAI-compatible API (corea/api/) on scripted backends: the schema, errors, keys and
limits in-process (Starlette's TestClient), then real clients (the official ``openai`` package,
raw httpx SSE, LangChain's ChatOpenAI) against a uvicorn server on 127.0.0.1, and two server
processes sharing one SQLite log under 16 concurrent streaming clients.

(Longer than 400 lines on purpose: one interface, and the real-server tests share the in-process
tests' service and SSE helpers.)"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from corea.api import ApiSettings, create_api
from corea.api.auth import Limiter, key_id_of
from corea.api.schemas import ChatMessage
from corea.api.server import bind_plan, is_loopback
from corea.api.translate import render_question, split_messages
from corea.backends.base import GenerationParams
from corea.backends.overrides import TierParams
from corea.store.storage import Store
from corea.types import Message

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from api_server import scripted_service  # noqa: E402

HELPER = str(Path(__file__).parent / "helpers" / "api_server.py")
KEY = "sk-test-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
KID = key_id_of(KEY)
Q = [{"role": "user", "content": "What is 2+2?"}]


def make(tmp_path, confidence=0.9, delay_s=0.0, words=12, **api):
    svc = scripted_service(f"sqlite:///{tmp_path / 'log.sqlite'}", confidence=confidence,
                           delay_s=delay_s, words=words)
    api.setdefault("keys", KEY)
    return svc, create_api(svc, ApiSettings(**api))


def sse_events(text: str) -> tuple[list[dict], list[str]]:
    """``(data objects, comment lines)`` of an SSE body; checks the ``[DONE]`` end."""
    data, comments = [], []
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert blocks[-1] == "data: [DONE]"
    for b in blocks[:-1]:
        if b.startswith(":"):
            comments.append(b)
        else:
            assert b.startswith("data: ")
            data.append(json.loads(b[6:]))
    return data, comments


# ------------------------------------------------------------------------------- in-process


def test_models_list_the_cascade_and_each_tier(tmp_path):
    _, app = make(tmp_path)
    c = TestClient(app)
    body = c.get("/v1/models", headers=AUTH).json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == ["corea", "scripted-slm", "scripted-llm"]
    assert body["data"][0]["corea"]["tiers"] == ["scripted-slm", "scripted-llm"]
    assert c.get("/v1/models/corea:0.8", headers=AUTH).json()["corea"]["threshold"] == 0.8


def test_kept_answer_in_one_body_is_logged_under_the_key_id(tmp_path):
    svc, app = make(tmp_path)
    r = TestClient(app).post("/v1/chat/completions", headers=AUTH,
                             json={"model": "corea", "messages": Q})
    assert r.status_code == 200
    b = r.json()
    assert b["object"] == "chat.completion" and b["model"] == "corea"
    msg = b["choices"][0]["message"]
    assert msg["role"] == "assistant" and "\\boxed{4}" in msg["content"]
    assert "reasoning_content" not in msg
    assert b["choices"][0]["finish_reason"] == "stop"
    co = b["corea"]
    assert (co["decision"], co["reason"], co["signal"], co["signal_value"],
            co["stated_confidence"], co["threshold"]) == ("kept", "confident", "verbal", 0.9,
                                                         0.9, 0.7)
    assert co["answered_by"] == "scripted-slm" and co["answered_tier"] == 0
    assert [t["model"] for t in co["tiers"]] == ["scripted-slm"]
    u = b["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert u["completion_tokens"] == co["tiers"][0]["completion_tokens"] > 0
    row = svc.store.get_interaction(co["interaction_id"])
    assert row["session_id"] == KID and row["status"] == "ok"
    assert row["question"] == "What is 2+2?" and row["final_model"] == "scripted-slm"


def test_deferred_stream_sends_only_the_llm_text_as_content(tmp_path):
    svc, app = make(tmp_path, confidence=0.3)
    r = TestClient(app).post("/v1/chat/completions", headers=AUTH, json={
        "model": "corea", "messages": Q, "stream": True,
        "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    data, comments = sse_events(r.text)
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(d["choices"][0]["delta"].get("content") or ""
                      for d in data if d["choices"])
    assert content.startswith("large0 large1") and "step0" not in content
    assert not any("reasoning_content" in d["choices"][0]["delta"] for d in data if d["choices"])
    assert all(d["object"] == "chat.completion.chunk" and d["id"] == data[0]["id"]
               for d in data)
    finish = [d for d in data if d["choices"] and d["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == "stop"
    co = finish[0]["corea"]
    assert co["decision"] == "deferred" and co["reason"] == "low_confidence"
    assert co["answered_by"] == "scripted-llm" and co["answered_tier"] == 1
    assert [t["role"] for t in co["tiers"]] == ["slm", "llm"]
    assert all(t["cost_usd"] >= 0 and t["completion_tokens"] > 0 for t in co["tiers"])
    usage = data[-1]
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] > 0
    assert usage["usage"]["completion_tokens"] == sum(t["completion_tokens"]
                                                      for t in co["tiers"])
    assert all(d["usage"] is None for d in data[:-1])  # include_usage: null until the last
    assert any('"decision":"deferred"' in c for c in comments)  # progress as SSE comments
    assert svc.store.get_interaction(co["interaction_id"])["decision_reason"] == "low_confidence"


def test_include_reasoning_streams_the_slm_text_apart_from_content(tmp_path):
    _, app = make(tmp_path, confidence=0.3)
    c = TestClient(app)
    r = c.post("/v1/chat/completions", headers=AUTH, json={
        "model": "corea", "messages": Q, "stream": True,
        "corea": {"include_reasoning": True, "progress": False}})
    data, comments = sse_events(r.text)
    reasoning = "".join(d["choices"][0]["delta"].get("reasoning_content") or "" for d in data)
    content = "".join(d["choices"][0]["delta"].get("content") or "" for d in data)
    assert reasoning.startswith("step0 step1") and "Confidence: 0.3" in reasoning
    assert "step0" not in content and content.startswith("large0")
    assert comments == []
    b = c.post("/v1/chat/completions", headers=AUTH, json={
        "model": "corea", "messages": Q, "corea": {"include_reasoning": True}}).json()
    assert b["choices"][0]["message"]["reasoning_content"].startswith("step0")


def test_a_quiet_stream_gets_keepalive_comments_and_no_spurious_ones(tmp_path, monkeypatch):
    from corea.api import stream

    monkeypatch.setattr(stream, "_KEEPALIVE_S", 0.05)
    _, app = make(tmp_path, confidence=0.3, delay_s=0.12, words=3)
    r = TestClient(app).post("/v1/chat/completions", headers=AUTH, json={
        "model": "corea", "messages": Q, "stream": True, "corea": {"progress": False}})
    data, comments = sse_events(r.text)
    assert comments and set(comments) == {": keepalive"}
    assert "".join(d["choices"][0]["delta"].get("content") or "" for d in data) \
        .startswith("large0 large1")
    _, app = make(tmp_path, confidence=0.3, delay_s=0.0, words=50)
    r = TestClient(app).post("/v1/chat/completions", headers=AUTH, json={
        "model": "corea", "messages": Q, "stream": True, "corea": {"progress": False}})
    assert sse_events(r.text)[1] == []


def test_failed_tiers_fall_back_or_answer_502_in_openai_shape(tmp_path):
    from corea.backends.base import BackendError

    svc, app = make(tmp_path, confidence=0.3)
    c = TestClient(app)
    svc.llm.error = BackendError("timeout", "the large model timed out")
    r = c.post("/v1/chat/completions", headers=AUTH, json={
        "model": "corea", "messages": Q, "stream": True})
    data, _ = sse_events(r.text)
    content = "".join(d["choices"][0]["delta"].get("content") or "" for d in data)
    co = data[-1]["corea"]
    assert co["reason"] == "llm_error" and co["answered_by"] == "scripted-slm"
    assert content.startswith("step0")  # the LLM failed before a token: the SLM's answer
    svc.slm.error = BackendError("unreachable", "the small model is down")
    r = c.post("/v1/chat/completions", headers=AUTH, json={"model": "corea", "messages": Q})
    assert r.status_code == 502 and r.json()["error"]["code"] == "cascade_failed"
    assert r.json()["corea"]["status"] == "error" and "Traceback" not in r.text
    r = c.post("/v1/chat/completions", headers=AUTH, json={
        "model": "corea", "messages": Q, "stream": True})
    data, _ = sse_events(r.text)
    assert data[-1]["error"]["code"] == "cascade_failed"
    assert svc.store.count() == 3


def test_threshold_from_the_model_name_and_from_extra_body(tmp_path):
    _, app = make(tmp_path, confidence=0.9)
    c = TestClient(app)

    def ask(**kw):
        return c.post("/v1/chat/completions", headers=AUTH,
                      json={"messages": Q, **kw}).json()["corea"]

    assert ask(model="corea")["decision"] == "kept"
    co = ask(model="corea:0.95")
    assert co["threshold"] == 0.95 and co["decision"] == "deferred"
    co = ask(model="corea:0.95", corea={"threshold": 0.5})  # the body wins over the name
    assert co["threshold"] == 0.5 and co["decision"] == "kept"


def test_max_tokens_and_stop_reach_each_tier(tmp_path):
    _, app = make(tmp_path, confidence=0.9)
    c = TestClient(app)
    co = c.post("/v1/chat/completions", headers=AUTH, json={
        "model": "corea", "messages": Q, "max_tokens": 5}).json()["corea"]
    # the SLM was cut at 5 tokens: a cut-off solution is never kept; the LLM is cut too
    assert co["tiers"][0]["finish_reason"] == "length"
    assert co["tiers"][0]["completion_tokens"] <= 5 + 1
    assert co["decision"] == "deferred" and co["tiers"][1]["finish_reason"] == "length"
    b = c.post("/v1/chat/completions", headers=AUTH, json={
        "model": "corea:1", "messages": Q, "corea": {"tiers": [None, {"max_tokens": 2}]}}).json()
    co = b["corea"]
    assert co["tiers"][1]["completion_tokens"] == 2
    # the LLM's answer was cut off: the SLM's usable answer is the one given
    assert co["reason"] == "llm_truncated" and co["answered_by"] == "scripted-slm"
    assert b["choices"][0]["message"]["content"].startswith("step0")
    co = c.post("/v1/chat/completions", headers=AUTH, json={
        "model": "corea:1", "messages": Q, "stop": "large3"}).json()["corea"]
    llm = co["tiers"][1]
    assert (llm["completion_tokens"], llm["finish_reason"], llm["answer"]) == (3, "stop", None)
    assert co["reason"] == "llm_no_answer" and co["tiers"][0]["finish_reason"] == "stop"


def test_tier_params_lower_the_budget_and_add_stops():
    p = GenerationParams(max_new_tokens=100, temperature=0.0, stop=("\n",))
    q = TierParams(max_new_tokens=500, temperature=0.7, stop=("END",)).apply(p)
    assert (q.max_new_tokens, q.temperature, q.stop) == (100, 0.7, ("\n", "END"))
    assert TierParams(max_new_tokens=8).apply(p).max_new_tokens == 8
    assert TierParams().apply(p) is p


@pytest.mark.parametrize("body, status, code", [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_json"),
    (json.dumps({"model": "corea"}), 400, "missing_messages"),
    (json.dumps({"model": "corea", "messages": []}), 400, "missing_messages"),
    (json.dumps({"model": "corea", "messages": [{"role": "user", "content": 5}]}), 422,
     "invalid_type"),
    (json.dumps({"model": "corea", "messages": Q, "temperature": "hot"}), 422, "invalid_type"),
    (json.dumps({"model": "gpt-9", "messages": Q}), 404, "model_not_found"),
    (json.dumps({"model": "scripted-llm", "messages": Q}), 404, "model_not_found"),
    (json.dumps({"model": "corea:1.5", "messages": Q}), 400, "invalid_threshold"),
    (json.dumps({"model": "corea:x", "messages": Q}), 400, "invalid_threshold"),
    (json.dumps({"model": "corea", "messages": Q, "corea": {"threshold": -0.1}}), 400,
     "invalid_threshold"),
    (json.dumps({"model": "corea", "messages": [{"role": "user", "content": "x" * 5000}]}),
     413, "prompt_too_long"),
    (json.dumps({"model": "corea", "messages": Q + [{"role": "assistant", "content": "4"}]}),
     400, "last_message_not_user"),
    (json.dumps({"model": "corea", "messages": [{"role": "user", "content": "   "}]}), 400,
     "invalid_question"),
    (json.dumps({"model": "corea", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}), 400, "unsupported_content"),
])
def test_bad_requests_get_openai_errors_never_a_traceback(tmp_path, body, status, code):
    svc, app = make(tmp_path)
    r = TestClient(app).post("/v1/chat/completions", headers=AUTH, content=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and "type" in err and "param" in err
    assert "Traceback" not in r.text
    assert svc.store.count() == 0


def test_oversized_body_n_and_tools_are_refused(tmp_path):
    _, app = make(tmp_path, max_body_bytes=2000)
    c = TestClient(app)
    r = c.post("/v1/chat/completions", headers=AUTH, json={
        "model": "corea", "messages": [{"role": "user", "content": "x" * 3000}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    for extra in ({"n": 2}, {"tools": [{"type": "function", "function": {"name": "f"}}]}):
        r = c.post("/v1/chat/completions", headers=AUTH,
                   json={"model": "corea", "messages": Q, **extra})
        assert r.status_code == 400, extra


def test_keys_from_a_file_ids_in_the_log_never_the_key(tmp_path, caplog):
    key_file = tmp_path / "keys"
    key_file.write_text("# team keys\nalice sk-alice-1\nsk-anon-2\n")
    svc, app = make(tmp_path, keys="", key_file=key_file)
    c = TestClient(app)
    caplog.set_level(logging.DEBUG)
    for key, kid in (("sk-alice-1", "alice"), ("sk-anon-2", key_id_of("sk-anon-2"))):
        b = c.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": "corea", "messages": Q}).json()
        assert svc.store.get_interaction(b["corea"]["interaction_id"])["session_id"] == kid
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        r = c.post("/v1/chat/completions", headers=headers, json={"model": "corea",
                                                                  "messages": Q})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert "sk-alice-1" not in caplog.text and "sk-anon-2" not in caplog.text
    assert "alice" in caplog.text  # the key id is what the log names


def test_without_keys_only_loopback_is_served(tmp_path):
    _, app = make(tmp_path, keys="")
    assert TestClient(app).get("/v1/models").status_code == 200
    remote = TestClient(app, client=("10.1.2.3", 5000))
    assert remote.get("/v1/models").status_code == 401
    assert bind_plan("127.0.0.1", False)[0] and not bind_plan("0.0.0.0", False)[0]
    assert bind_plan("0.0.0.0", True)[0] and "127.0.0.1 only" in bind_plan("::1", False)[1]
    assert is_loopback("localhost") and not is_loopback("example.org")


def test_cli_serve_refuses_a_public_address_without_keys(monkeypatch, capsys):
    from corea.cli import main

    monkeypatch.delenv("COREA_API_KEYS", raising=False)
    monkeypatch.delenv("COREA_API_KEY_FILE", raising=False)
    monkeypatch.setenv("COREA_DB_URL", "sqlite://")
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "without API keys" in capsys.readouterr().err


def test_limiter_rate_window_and_concurrency_caps():
    now = [0.0]
    lim = Limiter(rate_per_minute=2, max_concurrent=1, max_concurrent_total=2,
                  clock=lambda: now[0])
    assert lim.acquire("a")[0]
    assert lim.acquire("a") == (False, 1, "concurrency_limit_exceeded")
    lim.release("a")
    now[0] = 20.0
    assert lim.acquire("a")[0]
    lim.release("a")
    ok, retry, why = lim.acquire("a")
    assert (ok, why) == (False, "rate_limit_exceeded") and retry == 40
    now[0] = 60.0
    assert lim.acquire("a")[0] and lim.acquire("b")[0]
    assert lim.acquire("c") == (False, 1, "concurrency_limit_exceeded")  # total cap


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    _, app = make(tmp_path, rate_per_minute=1)
    c = TestClient(app)
    assert c.post("/v1/chat/completions", headers=AUTH,
                  json={"model": "corea", "messages": Q}).status_code == 200
    r = c.post("/v1/chat/completions", headers=AUTH, json={"model": "corea", "messages": Q})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


def test_multi_turn_context_reaches_every_tier_as_chat_messages(tmp_path):
    msgs = [ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="I have 3 apples."),
            ChatMessage(role="assistant", content="OK."),
            ChatMessage(role="user", content=[{"type": "text", "text": "How many if I eat one?"}])]
    q, context = split_messages(msgs)
    assert q == "How many if I eat one?"
    assert context == [Message("system", "Be brief."), Message("user", "I have 3 apples."),
                       Message("assistant", "OK.")]
    assert split_messages(msgs[-1:]) == ("How many if I eat one?", [])
    # the one-string rendering is still there for callers that need it
    assert render_question(msgs) == (
        "Earlier in this conversation:\nSystem: Be brief.\nUser: I have 3 apples.\n"
        "Assistant: OK.\n\nCurrent question: How many if I eat one?")
    svc, app = make(tmp_path, confidence=0.3)  # deferred: both tiers run
    c = TestClient(app)
    b = c.post("/v1/chat/completions", headers=AUTH, json={
        "model": "corea", "messages": [m.model_dump(exclude_none=True) for m in msgs]}).json()
    assert b["corea"]["answered_tier"] == 1
    row = svc.store.get_interaction(b["corea"]["interaction_id"])
    assert row["question"] == q
    assert row["extra"]["context"] == [m.as_dict() for m in context]
    for backend in (svc.slm, svc.llm):  # both tiers get the earlier turns as chat messages
        chat = [m for kind, m, _ in backend.calls if kind == "chat"][-1]
        assert [m.role for m in chat] == ["system", "user", "assistant", "user"]
        assert chat[0].content.endswith("\n\nBe brief.")  # after COREA's own instructions
        assert [m.content for m in chat[1:]] == ["I have 3 apples.", "OK.", q]
    # earlier turns count toward the question length limit (413)
    long = [{"role": "user", "content": "x" * 3000}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "y" * 1500}]
    r = c.post("/v1/chat/completions", headers=AUTH, json={"model": "corea", "messages": long})
    assert r.status_code == 413 and r.json()["error"]["code"] == "prompt_too_long"
    assert "earlier turns" in r.json()["error"]["message"]


def test_ratings_bind_to_the_keys_own_interactions(tmp_path):
    svc, app = make(tmp_path, keys=f"{KEY},other=sk-other")
    c = TestClient(app)
    iid = c.post("/v1/chat/completions", headers=AUTH,
                 json={"model": "corea", "messages": Q}).json()["corea"]["interaction_id"]
    r = c.post("/v1/corea/ratings", headers=AUTH,
               json={"interaction_id": iid, "thumbs": "down", "correction": "5"})
    assert r.status_code == 200 and r.json()["interaction_id"] == iid
    assert svc.store.get_interaction(iid)["rating_thumbs"] == "down"
    other = {"Authorization": "Bearer sk-other"}
    r = c.post("/v1/corea/ratings", headers=other, json={"interaction_id": iid, "thumbs": "up"})
    assert r.status_code == 404
    r = c.post("/v1/corea/ratings", headers=AUTH, json={"interaction_id": iid, "thumbs": "meh"})
    assert r.status_code == 422


def test_app_py_serves_the_api_next_to_the_web_ui(tmp_path):
    import app as web
    from corea.api.server import with_ui

    _, api = make(tmp_path)
    with TestClient(with_ui(api, web.demo)) as c:
        assert c.get("/v1/models", headers=AUTH).json()["data"][0]["id"] == "corea"
        assert c.get("/").status_code == 200  # the Gradio page


# ----------------------------------------------------------------------------- real servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app):
    """``app`` under uvicorn on 127.0.0.1 in a thread; yields its /v1 base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        t.join(10)


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_openai_client_streams_and_not(tmp_path):
    svc, app = make(tmp_path, confidence=0.3)
    with serving(app) as base:
        client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=20)
        assert [m.id for m in client.models.list()][0] == "corea"
        done = client.chat.completions.create(model="corea", messages=Q)
        assert done.choices[0].message.content.startswith("large0")
        assert done.corea["decision"] == "deferred"  # extra fields are kept by the client
        stream = client.chat.completions.create(
            model="corea", messages=Q, stream=True, stream_options={"include_usage": True},
            extra_body={"corea": {"threshold": 0.2}})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "\\boxed{4}" in text and "Confidence: 0.3" in text  # kept: the SLM's text
        last = chunks[-1]
        assert last.choices == [] and last.usage.total_tokens > 0
        final = [c for c in chunks if c.choices and c.choices[0].finish_reason][0]
        co = final.model_extra["corea"]
        assert co["decision"] == "kept" and co["threshold"] == 0.2
        assert co["stated_confidence"] == 0.3 and co["answered_by"] == "scripted-slm"
    assert svc.store.count() == 2


def test_openai_client_errors_401_400_429(tmp_path):
    _, app = make(tmp_path, rate_per_minute=1)
    with serving(app) as base:
        bad = openai.OpenAI(base_url=base, api_key="nope", max_retries=0, timeout=20)
        with pytest.raises(openai.AuthenticationError) as e:
            bad.chat.completions.create(model="corea", messages=Q)
        assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
        client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=20)
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="corea:7", messages=Q)
        assert e.value.code == "invalid_threshold"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o", messages=Q)
        client.chat.completions.create(model="corea", messages=Q)
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="corea", messages=Q, stream=True)
        assert int(e.value.response.headers["retry-after"]) >= 1


def test_closing_a_stream_early_cancels_and_logs_the_turn(tmp_path):
    svc, app = make(tmp_path, confidence=0.3, delay_s=0.02, words=400)
    with serving(app) as base:
        client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=20)
        stream = client.chat.completions.create(
            model="corea", messages=Q, stream=True, extra_body={"corea": {
                "include_reasoning": True}})
        for i, _chunk in enumerate(stream):
            if i == 5:
                break
        stream.close()
        wait_for(lambda: svc.store.count() == 1)
        row = svc.store.list_interactions()[0]
        assert row["status"] == "cancelled" and row["session_id"] == KID
        assert svc.slm.closed_early == 1  # generation stopped: the SLM never finished
        assert row["slm_completion_tokens"] < 100
        assert app.state.corea_limiter.in_flight() == 0  # the slot is free again


def test_raw_httpx_sse_lines(tmp_path):
    _, app = make(tmp_path, confidence=0.3)
    with serving(app) as base:
        lines = []
        with httpx.stream("POST", f"{base}/chat/completions", headers=AUTH, timeout=20,
                          json={"model": "corea", "messages": Q, "stream": True}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = list(r.iter_lines())
    data, comments = sse_events("\n".join(lines) + "\n")
    assert [c.split()[2] for c in comments] == ["tier", "decision", "tier"]
    assert data[-1]["choices"][0]["finish_reason"] == "stop" and "corea" in data[-1]


def test_langchain_chat_openai_works_unchanged(tmp_path):
    lc = pytest.importorskip("langchain_openai")
    _, app = make(tmp_path, confidence=0.3)
    with serving(app) as base:
        llm = lc.ChatOpenAI(model="corea:0.9", base_url=base, api_key=KEY, max_retries=0,
                            timeout=20)
        assert llm.invoke("What is 2+2?").content.startswith("large0")
        streamed = "".join(part.content for part in llm.stream("What is 2+2?"))
        assert streamed.startswith("large0") and "step0" not in streamed


def test_two_processes_one_log_16_streaming_clients(db_url):
    """On SQLite (WAL) and, with COREA_TEST_PG_URL, on PostgreSQL (``db_url``, conftest.py)."""
    Store(db_url).close()  # create the schema once, before both servers start
    env = {**os.environ, "COREA_API_KEYS": KEY, "COREA_API_MAX_CONCURRENT": "16",
           "COREA_API_MAX_CONCURRENT_TOTAL": "5", "COREA_API_RATE_PER_MINUTE": "1000"}
    ports = [free_port(), free_port()]
    procs = [subprocess.Popen([sys.executable, HELPER, "--port", str(p), "--db",
                               db_url, "--confidence", str(c), "--delay", "0.01",
                               "--words", "30"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
             for p, c in zip(ports, (0.9, 0.3))]  # one keeps the SLM's answers, one defers
    try:
        for p, proc in zip(ports, procs):
            def up(p=p, proc=proc):
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                try:
                    return httpx.get(f"http://127.0.0.1:{p}/v1/models", headers=AUTH,
                                     timeout=1).status_code == 200
                except httpx.TransportError:
                    return False
            wait_for(up, timeout=60)

        def one(i):
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{ports[i % 2]}/v1", api_key=KEY,
                                   max_retries=0, timeout=30)
            try:
                chunks = list(client.chat.completions.create(
                    model="corea", messages=[{"role": "user", "content": f"question {i}"}],
                    stream=True))
            except openai.RateLimitError:
                return i, None
            final = [c for c in chunks if c.choices and c.choices[0].finish_reason][0]
            return i, final.model_extra["corea"]

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(16)))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    answered = {i: co for i, co in results if co is not None}
    refused = [i for i, co in results if co is None]
    assert len(answered) + len(refused) == 16 and len(answered) >= 2
    with Store(db_url) as store:
        rows = store.list_interactions(limit=None)
    assert len(rows) == len(answered)  # every answered request logged exactly once
    by_q = {}
    for row in rows:
        by_q.setdefault(row["question"], []).append(row)
    for i, co in answered.items():
        (row,) = by_q[f"question {i}"]
        assert row["id"] == co["interaction_id"] and row["status"] == "ok"
        assert row["session_id"] == KID
        assert co["decision"] == ("kept" if i % 2 == 0 else "deferred")


@pytest.mark.model
def test_embedded_models_stream_an_answer_through_the_api(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from corea.config import ModelSettings, Settings
    from corea.service import CoreaService

    svc = CoreaService(Settings(
        threshold=0.7, db_url=f"sqlite:///{tmp_path / 'real.sqlite'}",
        slm=ModelSettings(backend="llamacpp", model="embedded:slm", max_new_tokens=96),
        llm=ModelSettings(backend="llamacpp", model="embedded:llm", max_new_tokens=96)))
    with serving(create_api(svc, ApiSettings(keys=KEY))) as base:
        client = openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=300)
        chunks = list(client.chat.completions.create(
            model="corea", messages=[{"role": "user", "content": "What is 2 + 3?"}],
            stream=True, max_tokens=32, stream_options={"include_usage": True},
            extra_body={"corea": {"include_reasoning": True}}))
    reasoning = [c for c in chunks if c.choices and
                 (c.choices[0].delta.model_extra or {}).get("reasoning_content")]
    assert len(reasoning) > 5, "the SLM's text should stream token by token"
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][0]
    co = final.model_extra["corea"]
    assert co["decision"] in ("kept", "deferred") and co["reason"] and co["threshold"] == 0.7
    slm = co["tiers"][0]
    assert slm["model"] == "Qwen2.5-Coder-0.5B-Instruct" and slm["completion_tokens"] <= 32 + 32
    assert chunks[-1].usage.completion_tokens == co["completion_tokens"] > 5
    row = svc.store.get_interaction(co["interaction_id"])
    assert row["session_id"] == KID and row["status"] == "ok"


def test_usage_reports_measured_prompt_and_generation_seconds_per_tier(tmp_path):
    svc, app = make(tmp_path, confidence=0.3, delay_s=0.002)
    b = TestClient(app).post("/v1/chat/completions", headers=AUTH,
                             json={"model": "corea", "messages": Q}).json()
    s = b["usage"]["seconds"]
    assert [(t["index"], t["role"]) for t in s["tiers"]] == [(0, "slm"), (1, "llm")]
    assert [t["model"] for t in s["tiers"]] == [t["model"] for t in b["corea"]["tiers"]]
    for t, co in zip(s["tiers"], b["corea"]["tiers"]):
        assert t["prompt"] >= 0 and t["generation"] > 0  # it streamed after its first token
        assert t["prompt"] + t["generation"] == pytest.approx(co["latency_s"], abs=2e-6)
    assert s["prompt"] == pytest.approx(sum(t["prompt"] for t in s["tiers"]), abs=1e-5)
    assert s["generation"] == pytest.approx(sum(t["generation"] for t in s["tiers"]), abs=1e-5)
    assert s["total"] == pytest.approx(s["prompt"] + s["generation"], abs=1e-5)
    assert s["wall"] >= s["total"] - 1e-3
