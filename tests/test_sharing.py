"""Sharing the demo: the ordinary ways to publish a local app make no stranger an owner, and
limits count clients, not browser sessions (issue 32).

The app runs on scripted backends and a temporary database with **no owner configured** (so it
makes a one-time token), on 127.0.0.1, and is reached: directly (scripted clients bound to
127.0.0.2, 127.0.0.3, ... — Linux routes all of 127/8 to the loopback device), with forwarding
headers, through a real nginx (Debian's ``nginx``; skipped without it), and launched with
``GRADIO_SHARE=true`` (the tunnel cannot open here: Gradio's tunnel set-up is replaced by one that
records the call). Owner-only endpoints are called over plain HTTP by index, as a script that
ignores the Gradio client could (``_call``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from corea.auth import OWNER_ONLY, Roles
from corea.backends.fake import FakeBackend
from corea.clients import PerClientLimit, TrustedProxies, client_address, client_key
from corea.config import Settings
from corea.service import CoreaService

httpx = pytest.importorskip("httpx")
REPO = Path(__file__).resolve().parents[1]
REFUSED = OWNER_ONLY.split(" ", 1)[1]
TOO_FAST = "asking too fast"


# ------------------------------------------------------------------------- the address rule

def _req(peer, xff=None, **kw):
    headers = {"x-forwarded-for": xff} if xff is not None else {}
    return SimpleNamespace(client=SimpleNamespace(host=peer), headers=headers, **kw)


@pytest.mark.parametrize("trusted, peer, xff, client", [
    ("", "127.0.0.1", "192.0.2.1", "127.0.0.1"),          # nobody trusted: the peer
    ("", "203.0.113.5", "127.0.0.1", "203.0.113.5"),      # a header cannot claim "local"
    ("127.0.0.1", "127.0.0.1", "192.0.2.1", "192.0.2.1"),
    ("127.0.0.1", "127.0.0.1", "6.6.6.6, 192.0.2.1", "192.0.2.1"),  # appended: rightmost
    ("127.0.0.1,10.0.0.0/8", "127.0.0.1", "192.0.2.1, 10.1.1.1", "192.0.2.1"),  # two proxies
    ("127.0.0.1", "127.0.0.1", None, "127.0.0.1"),        # a proxy that names nobody
    ("127.0.0.1", "203.0.113.5", "192.0.2.1", "203.0.113.5"),  # not from the proxy: ignored
    ("::1", "::1", "[2001:db8::7]:4711", "2001:db8::7"),
    ("127.0.0.1", "127.0.0.1", "192.0.2.1:5555", "192.0.2.1"),
    ("*", "10.0.0.5", "6.6.6.6, 192.0.2.1", "192.0.2.1"),  # one proxy, whoever it is
    ("*", "10.0.0.5", None, "10.0.0.5"),
])
def test_client_address_believes_only_trusted_proxies(trusted, peer, xff, client):
    assert client_address(_req(peer, xff), TrustedProxies.parse(trusted)) == client


def test_client_key_and_limit():
    trusted = TrustedProxies.parse("127.0.0.1")
    assert client_key(_req("127.0.0.1", "192.0.2.1"), trusted) == "addr:192.0.2.1"
    assert client_key(_req("127.0.0.1"), trusted, user="Alice") == "user:alice"
    assert client_key(SimpleNamespace(session_hash="s"), trusted) == "session:s"
    assert client_key(None, trusted) == "in-process"
    with pytest.raises(ValueError, match="'proxy.local' is not an IP address"):
        TrustedProxies.parse("127.0.0.1, proxy.local")
    assert TrustedProxies.configured("", on_space=True).any_peer  # a Space: behind its proxy
    assert not TrustedProxies.configured("", on_space=False).any_peer
    assert not TrustedProxies.configured("10.0.0.0/8", on_space=True).any_peer
    assert str(TrustedProxies.parse("*, 127.0.0.1")) == "127.0.0.1/32"  # uvicorn: no "*"
    limit = PerClientLimit(window_s=60.0)
    assert limit.take("a", 2) is None and limit.take("a", 2) is None
    assert 59.0 < limit.take("a", 2) <= 60.0
    assert limit.take("b", 2) is None and limit.take("a", 0) is None


# --------------------------------------------------------------------------------- the app

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _service(tmp_path, **kw) -> CoreaService:
    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'share.sqlite'}",
                        cache_dir=tmp_path / "cache", **kw)
    return CoreaService(
        settings,
        slm=FakeBackend(["\\boxed{4}\nConfidence: 0.9"], model_name=settings.slm.name),
        llm=FakeBackend(["\\boxed{5}"], model_name=settings.llm.name))


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """``serve(**settings) -> (url, demo, service, roles)``: the app with no owner configured."""
    import app

    monkeypatch.setenv("COREA_RUNS_DIR", str(tmp_path / "runs"))
    for name in ("COREA_OWNER_TOKEN", "COREA_OWNERS", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    demos = []

    def start(**kw):
        service = _service(tmp_path, **kw)
        roles = Roles.from_env(TrustedProxies.parse(service.settings.trusted_proxies))
        demo = app.build_demo(service, roles=roles)  # as app.py builds its module-level demo
        port = _free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                    quiet=True)
        demos.append(demo)
        return f"http://127.0.0.1:{port}/", demo, service, roles

    yield start
    for demo in demos:
        demo.close()


def _fn(demo, name: str) -> int:
    return next(i for i, f in demo.fns.items() if getattr(f.fn, "__name__", "") == name)


def _call(url, fn_index, data, session=None, *, source=None, headers=None, params=None) -> str:
    """Run one event over plain HTTP (``queue/join`` then the event stream); the stream's text.
    ``source``: the local address to connect from; ``params``: the page's query string."""
    transport = httpx.HTTPTransport(local_address=source) if source else None
    session = session or uuid.uuid4().hex
    with httpx.Client(base_url=url, timeout=30, transport=transport,
                      headers=headers or {}) as http:
        r = http.post("gradio_api/queue/join", params=params or {},
                      json={"data": data, "fn_index": fn_index, "session_hash": session,
                            "event_data": None, "trigger_id": None})
        if r.status_code != 200:
            return f"HTTP {r.status_code}: {r.text}"
        out = []
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as s:
            for line in s.iter_lines():
                out.append(line)
                if "process_completed" in line:
                    break
        return "\n".join(out)


def _ask(url, demo, question, session=None, **kw) -> str:
    """The Ask tab's inputs as the page sends them: question, chat, τ, the session's turns and
    "Solve by" (``None``: each tier as configured)."""
    return _call(url, _fn(demo, "respond"), [question, [], 0.7, [], None], session, **kw)


def _fit(url, demo, session=None, **kw) -> str:
    """An owner-only action whose inputs Gradio accepts: fitting a calibrator."""
    return _call(url, _fn(demo, "fit"), [[], True, "logistic"], session, **kw)


def _done(reply: str) -> bool:
    """The event completed and did its job (no refusal)."""
    return '"success":true' in reply and REFUSED not in reply


FORWARDING = [{"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1;proto=http"},
              {"X-Real-IP": "127.0.0.1", "X-Forwarded-Host": "localhost"}]


def test_nobody_is_an_owner_by_address_and_the_console_token_signs_in(serve):
    url, demo, service, roles = serve()
    assert roles.generated
    token = roles.sign_in_url().split("?token=", 1)[1]
    for headers in [{}] + FORWARDING:  # from 127.0.0.1 itself, with any forwarding header
        reply = _fit(url, demo, headers=headers)
        assert REFUSED in reply, (headers, reply[-300:])
        assert token not in reply
    # the Gradio client, as an anonymous script: owner data is not there, the token box refuses
    from gradio_client import Client

    _ask(url, demo, "What is 2 + 2?")
    script = Client(url, verbose=False)
    rows, status = script.predict("All", "All", "", api_name="/history_table")
    assert rows["data"] == [] and "this browser session" in status
    assert "Wrong owner token" in script.predict("guess", api_name="/sign_in")[0]
    # the token from the console signs that client's session in
    assert "Signed in as the owner" in script.predict(token, api_name="/sign_in")[0]
    rows, status = script.predict("All", "All", "", api_name="/history_table")
    assert len(rows["data"]) == 1 and "all sessions" in status
    assert _done(_fit(url, demo, script.session_hash))
    # the console link: a page opened with ?token= signs in on load (what a browser sends)
    page = uuid.uuid4().hex
    assert REFUSED in _fit(url, demo, page)
    loaded = _call(url, _fn(demo, "on_load"), [], page, params={"token": token})
    assert "Owner" in loaded and token not in loaded
    assert _done(_fit(url, demo, page))
    stale = _call(url, _fn(demo, "on_load"), [], params={"token": "from-an-earlier-start"})
    assert "not valid" in stale and "Visitor" in stale


def test_share_link_launch_keeps_everyone_a_visitor(serve, monkeypatch):
    """``GRADIO_SHARE=true``: Gradio opens a tunnel whose client forwards strangers from
    127.0.0.1. Here the tunnel is recorded, not opened; the app's decision is what is tested."""
    import gradio.networking

    opened = []

    def fake_tunnel(local_host, local_port, **_kw):
        opened.append((local_host, local_port))
        return "https://0123456789abcdef.gradio.live"

    monkeypatch.setattr(gradio.networking, "setup_tunnel", fake_tunnel)
    monkeypatch.setenv("GRADIO_SHARE", "true")
    url, demo, service, roles = serve()
    assert demo.share and opened == [("127.0.0.1", demo.server_port)]
    # what the tunnel forwards arrives from 127.0.0.1, like every request here: a visitor
    assert REFUSED in _fit(url, demo)
    assert REFUSED in _fit(url, demo, headers=FORWARDING[0])
    assert roles.generated and not roles.is_owner(SimpleNamespace(
        session_hash="x", client=SimpleNamespace(host="127.0.0.1"), headers={}))


def test_reloads_and_several_scripted_clients_share_one_allowance_each(serve):
    url, demo, service, _ = serve(questions_per_minute=2)
    sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    replies = {s: [] for s in sources}
    # three clients, three page loads each (a reload is a new session), two questions allowed
    for attempt in range(3):
        for s in sources:
            replies[s].append(_ask(url, demo, f"What is {attempt} + 1?", source=s))
    for s in sources:
        answered = ["logged as" in r and TOO_FAST not in r for r in replies[s]]
        assert answered == [True, True, False], (s, [r[-200:] for r in replies[s]])
        assert TOO_FAST in replies[s][2]
    assert service.store.count() == 6
    # a made-up X-Forwarded-For from an untrusted peer does not buy a fresh allowance
    forged = _ask(url, demo, "What is 9 + 1?", source="127.0.0.2",
                  headers={"X-Forwarded-For": "192.0.2.77"})
    assert TOO_FAST in forged and service.store.count() == 6


# ---------------------------------------------------------------------------- through nginx

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
{user}
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
        }}
    }}
}}
"""


@pytest.fixture
def nginx(tmp_path):
    """``nginx(upstream_url) -> proxy_url``: Debian's nginx in front of the app."""
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx; scripts/install.sh --test)")
    procs = []

    def start(upstream: str) -> str:
        tmp = tmp_path / f"nginx{len(procs)}"
        tmp.mkdir()
        port = _free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            tmp=tmp, port=port, upstream=upstream.rstrip("/").rsplit(":", 1)[1],
            user="user root;" if os.geteuid() == 0 else ""))
        proc = subprocess.Popen([binary, "-p", str(tmp), "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return f"http://127.0.0.1:{port}/"
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"nginx did not start: {proc.stderr.read().decode()[-500:]}")
                time.sleep(0.1)
        pytest.fail("nginx did not open its port")

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGQUIT)  # graceful stop of this test's own nginx
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_through_nginx_visitors_stay_visitors_and_are_counted_by_their_address(serve, nginx):
    url, demo, service, roles = serve(questions_per_minute=1, trusted_proxies="127.0.0.1")
    proxy = nginx(url)
    token = roles.sign_in_url().split("?token=", 1)[1]
    # strangers through the proxy arrive from 127.0.0.1: still visitors
    assert REFUSED in _fit(proxy, demo, source="127.0.0.2")
    assert REFUSED in _fit(proxy, demo, source="127.0.0.2", headers=FORWARDING[0])
    # nginx names each client; its own header value stays on the left and is not believed
    assert "logged as #1" in _ask(proxy, demo, "What is 1 + 1?", source="127.0.0.2")
    assert TOO_FAST in _ask(proxy, demo, "What is 1 + 2?", source="127.0.0.2")  # a reload
    assert TOO_FAST in _ask(proxy, demo, "What is 1 + 3?", source="127.0.0.2",
                            headers={"X-Forwarded-For": "192.0.2.1"})
    assert "logged as #2" in _ask(proxy, demo, "What is 1 + 4?", source="127.0.0.3")
    assert service.store.count() == 2
    # the owner signs in through the proxy with the console token
    from gradio_client import Client

    owner = Client(proxy, verbose=False)
    assert "Signed in as the owner" in owner.predict(token, api_name="/sign_in")[0]
    assert _done(_fit(proxy, demo, owner.session_hash))


# ----------------------------------------------------------------------- `python app.py`

def test_python_app_prints_the_link_once_and_logs_no_token(tmp_path):
    """The real entry point: the console shows the sign-in link once; the server's access log
    (uvicorn, ``python app.py`` serves the API next to the app) blanks the token; the link
    signs in."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRADIO_SERVER_PORT": str(port),
           "COREA_DB_URL": f"sqlite:///{tmp_path / 'app.sqlite'}",
           "COREA_CACHE_DIR": str(tmp_path / "cache"), "COREA_RUNS_DIR": str(tmp_path / "runs"),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    for name in ("COREA_OWNER_TOKEN", "COREA_OWNERS", "SPACE_ID", "COREA_API_KEYS",
                 "COREA_API_KEY_FILE", "GRADIO_SERVER_NAME", "GRADIO_SHARE"):
        env.pop(name, None)
    log = tmp_path / "console.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "app.py")], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail(f"app.py exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail(f"app.py did not answer: {log.read_text()[-2000:]}")
        link = next(line.split()[-1] for line in log.read_text().splitlines()
                    if "?token=" in line)
        token = link.split("?token=", 1)[1]
        assert link == f"http://127.0.0.1:{port}/?token={token}"
        assert httpx.get(link, timeout=10).status_code == 200
        from gradio_client import Client

        client = Client(url, verbose=False)
        assert "Visitor" in client.predict(api_name="/sign_out")
        assert "Signed in as the owner" in client.predict(token, api_name="/sign_in")[0]
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    console = log.read_text()
    assert console.count(token) == 1, console[-3000:]
    assert "GET /?token=*** " in console  # the access log line, blanked


@pytest.fixture
def keyless_api(tmp_path, monkeypatch):
    """The OpenAI-compatible API without keys (loopback only), served by uvicorn as
    ``python app.py`` serves it; yields its URL."""
    import threading

    import uvicorn

    from corea.api import create_api
    from corea.api.settings import ApiSettings

    for name in ("COREA_API_KEYS", "COREA_API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    api = create_api(_service(tmp_path), ApiSettings())
    assert not api.state.corea_keys.enabled
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning",
                                           forwarded_allow_ips=""))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


def test_keyless_api_refuses_what_came_through_a_proxy(keyless_api, nginx):
    assert httpx.get(keyless_api + "v1/models", timeout=10).status_code == 200
    for headers in FORWARDING:
        r = httpx.get(keyless_api + "v1/models", headers=headers, timeout=10)
        assert r.status_code == 401 and "through a proxy" in r.text, headers
    r = httpx.get(nginx(keyless_api) + "v1/models", timeout=10)
    assert r.status_code == 401 and "through a proxy" in r.text
