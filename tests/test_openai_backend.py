"""OpenAIBackend against a tiny local OpenAI-compatible server (127.0.0.1, random port, no internet)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

openai = pytest.importorskip("openai")

from corea.backends import make_backend  # noqa: E402
from corea.backends import openai_backend as ob  # noqa: E402
from corea.backends.base import BackendError, GenerationParams, Message, Usage, collect  # noqa: E402
from corea.config import ModelSettings  # noqa: E402

MSGS = [Message("system", "Be brief."), Message("user", "Say hello")]
PARAMS = GenerationParams(max_new_tokens=32)


def _chunk(content=None, finish=None, role=None, choices=True, usage=None, logprobs=None):
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    body = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "test-model",
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                         "finish_reason": finish}]
            if choices else []}
    if usage is not None:
        body["usage"] = usage
    return body


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _json(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, event) -> None:
        payload = event if isinstance(event, str) else json.dumps(event)
        self.wfile.write(f"data: {payload}\n\n".encode())
        self.wfile.flush()

    def do_POST(self):
        srv = self.server
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        srv.requests.append({"path": self.path, "body": body,
                             "auth": self.headers.get("Authorization")})
        if self.path != "/v1/chat/completions":
            return self._json(404, {"error": {"message": "no such route", "type": "not_found"}})
        mode = srv.mode
        if mode in ("logprobs", "no_logprobs_400") and body.get("logprobs") and \
                mode == "no_logprobs_400":
            return self._json(400, {"error": {"message": "logprobs is not supported by this "
                                                         "server", "type": "invalid_request"}})
        if mode == "logprobs" and body.get("logprobs"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece, lp in (("Hel", -0.1), ("lo", -0.2)):
                self._sse(_chunk(content=piece, logprobs={"content": [
                    {"token": piece, "logprob": lp, "bytes": None, "top_logprobs": []}]}))
            self._sse(_chunk(finish="stop"))
            self._sse("[DONE]")
            return
        if mode in ("logprobs", "no_logprobs_400"):
            mode = "ok"
        if isinstance(mode, int):  # an HTTP error status
            return self._json(mode, {"error": {"message": f"simulated error {mode}",
                                               "type": "test", "code": str(mode)}})
        if mode == "slow":
            srv.release.wait(3.0)  # bounded; released at teardown
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            if mode in ("ok", "no_usage"):
                self._sse(_chunk(content="", role="assistant"))
                for piece in ("Hel", "lo", " world"):
                    self._sse(_chunk(content=piece))
                self._sse(_chunk(finish="length" if body.get("max_tokens") == 3 else "stop"))
                if mode == "ok":
                    self._sse(_chunk(choices=False, usage={"prompt_tokens": 11,
                                                           "completion_tokens": 3,
                                                           "total_tokens": 14}))
                self._sse("[DONE]")
            elif mode == "stream_error":
                self._sse(_chunk(content="Hi"))
                self._sse({"error": {"message": "engine crashed", "type": "server_error"}})
            elif mode == "endless":
                self._sse(_chunk(content="first"))
                for _ in range(250):  # bounded: ~5 s at most
                    time.sleep(0.02)
                    self._sse(_chunk(content="."))
                srv.finished_without_disconnect = True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            srv.disconnected.set()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode: str | int = "ok"
        self.requests: list[dict] = []
        self.release = threading.Event()
        self.disconnected = threading.Event()
        self.finished_without_disconnect = False


@pytest.fixture
def server():
    srv = _Server()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        t.join(timeout=2)


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def _backend(url: str | None, **kw) -> ob.OpenAIBackend:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout_s", 5.0)
    return ob.OpenAIBackend(ModelSettings(backend="openai", model="test-model", base_url=url, **kw))


def _url(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


def test_streams_text_and_usage(server):
    b = _backend(_url(server))
    assert b.model_name == "test-model" and b.supports_continuation is False
    chunks = list(b.stream_chat(MSGS, PARAMS))
    assert [c.text for c in chunks[:-1]] == ["Hel", "lo", " world"]
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.text == "" and last.usage == Usage(11, 3) and last.finish_reason == "stop"
    req = server.requests[0]
    body = req["body"]
    assert req["auth"] == "Bearer EMPTY"  # local server without a key: dummy key
    assert body["model"] == "test-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 32 and body["temperature"] == 0.0 and body["top_p"] == 1.0
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Say hello"}]


def test_finish_length_and_stop_strings_and_key(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-local")
    b = _backend(_url(server), api_key_env="MY_KEY", display_name="Shown")
    assert b.model_name == "Shown"
    text, usage, finish = collect(b.stream_chat(MSGS, GenerationParams(max_new_tokens=3,
                                                                       stop=("\n\n",))))
    assert (text, usage, finish) == ("Hello world", Usage(11, 3), "length")
    assert server.requests[0]["auth"] == "Bearer sk-local"
    assert server.requests[0]["body"]["stop"] == ["\n\n"]


def test_server_without_usage(server):
    server.mode = "no_usage"
    chunks = list(_backend(_url(server)).stream_chat(MSGS, PARAMS))
    assert "".join(c.text for c in chunks) == "Hello world"
    assert chunks[-1].usage == Usage(0, 0) and chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize("status,kind", [(429, "rate_limited"), (401, "auth"), (403, "auth"),
                                         (404, "model_missing"), (400, "bad_request"),
                                         (500, "internal")])
def test_http_errors_are_mapped(server, status, kind):
    server.mode = status
    with pytest.raises(BackendError) as ei:
        list(_backend(_url(server)).stream_chat(MSGS, PARAMS))
    assert ei.value.kind == kind
    assert _url(server) in str(ei.value)
    assert len(server.requests) == 1  # max_retries=0: no retry


def test_error_inside_stream_is_internal(server):
    server.mode = "stream_error"
    gen = _backend(_url(server)).stream_chat(MSGS, PARAMS)
    assert next(gen).text == "Hi"
    with pytest.raises(BackendError) as ei:
        next(gen)
    assert ei.value.kind == "internal" and "engine crashed" in str(ei.value)


def test_connection_refused_is_unreachable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    t0 = time.monotonic()
    with pytest.raises(BackendError) as ei:
        list(_backend(url).stream_chat(MSGS, PARAMS))
    assert ei.value.kind == "unreachable"
    assert str(ei.value).startswith(f"LLM endpoint {url} unreachable: ")
    assert time.monotonic() - t0 < 3


def test_slow_server_is_timeout(server):
    server.mode = "slow"
    t0 = time.monotonic()
    with pytest.raises(BackendError) as ei:
        list(_backend(_url(server), timeout_s=0.5).stream_chat(MSGS, PARAMS))
    assert ei.value.kind == "timeout"  # not "unreachable", although a subclass of it
    assert "timed out" in str(ei.value)
    assert time.monotonic() - t0 < 2.5


def test_missing_key_for_openai_is_auth_without_network(monkeypatch):
    def no_client(*a, **k):
        raise AssertionError("no client / network call expected")

    monkeypatch.setattr(ob.openai, "OpenAI", no_client)
    b = _backend(None, api_key_env="COREA_TEST_UNSET_KEY")  # constructing must not fail
    for _ in range(2):
        with pytest.raises(BackendError) as ei:
            list(b.stream_chat(MSGS, PARAMS))
        assert ei.value.kind == "auth"
        assert str(ei.value).startswith("COREA_TEST_UNSET_KEY is not set")
    # through the factory too (the app must still start)
    b2 = make_backend(ModelSettings(backend="openai", model="gpt-4o-mini"), cache_dir=None)
    with pytest.raises(BackendError) as ei:
        list(b2.stream_chat(MSGS, PARAMS))
    assert ei.value.kind == "auth" and "OPENAI_API_KEY is not set" in str(ei.value)


def test_continue_chat_unsupported(server):
    with pytest.raises(BackendError) as ei:
        _backend(_url(server)).continue_chat(MSGS, "Answer: x\n\nConfidence:", PARAMS)
    assert ei.value.kind == "unsupported"


def test_early_close_closes_http_response(server, monkeypatch):
    server.mode = "endless"
    streams = []
    Completions = openai.resources.chat.completions.Completions
    orig = Completions.create

    def spy(self, *a, **k):
        s = orig(self, *a, **k)
        streams.append(s)
        return s

    monkeypatch.setattr(Completions, "create", spy)
    gen = _backend(_url(server)).stream_chat(MSGS, PARAMS)
    assert next(gen).text == "first"
    assert streams and not streams[0].response.is_closed
    gen.close()
    assert streams[0].response.is_closed
    assert server.disconnected.wait(4.0), "server did not observe the client disconnect"
    assert not server.finished_without_disconnect


def test_logprobs_are_requested_and_returned(server):
    server.mode = "logprobs"
    b = _backend(_url(server))
    chunks = list(b.stream_chat(MSGS, PARAMS))
    assert server.requests[0]["body"]["logprobs"] is True
    assert [p for c in chunks for p in c.logprobs] == [("Hel", -0.1), ("lo", -0.2)]
    assert b.logprobs_supported is True


def test_server_rejecting_logprobs_is_asked_again_without_and_not_again(server):
    server.mode = "no_logprobs_400"
    b = _backend(_url(server))
    text, usage, _ = collect(b.stream_chat(MSGS, PARAMS))
    assert text == "Hello world" and b.logprobs_supported is False
    assert [r["body"].get("logprobs") for r in server.requests] == [True, None]
    collect(b.stream_chat(MSGS, PARAMS))
    assert server.requests[-1]["body"].get("logprobs") is None  # not asked again
    off = _backend(_url(server), logprobs=False)
    collect(off.stream_chat(MSGS, PARAMS))
    assert server.requests[-1]["body"].get("logprobs") is None
