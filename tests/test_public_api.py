"""The running app as an anonymous script sees it: the Gradio Python client calls every endpoint
that ``view_api()`` lists, and raw HTTP calls the private (owner) ones by index. Scripted backends,
a temporary database, loopback only; the roles are those of a public deployment with an owner
token (``Roles(host="0.0.0.0")``, while the server itself binds 127.0.0.1)."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import pytest

from corea.auth import OWNER_ONLY, Roles
from corea.backends.fake import FakeBackend
from corea.config import Settings
from corea.service import CoreaService
from corea.ui.explorer import INTERACTIONS

pytest.importorskip("gradio_client")
httpx = pytest.importorskip("httpx")

SECRET = "IBAN DE89 3704 0044 0532 0130 00"
TOKEN = "owner-token-7f3a"
OWNER_ENDPOINTS = ("start", "use_as_slm", "evaluate", "fit", "switch", "live", "runs_dropdown",
                   "owner_view", "current")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def public_app(tmp_path, monkeypatch):
    import app

    monkeypatch.setenv("COREA_RUNS_DIR", str(tmp_path / "runs"))
    settings = Settings(threshold=0.7, db_url=f"sqlite:///{tmp_path / 'public.sqlite'}",
                        cache_dir=tmp_path / "cache")
    service = CoreaService(
        settings,
        slm=FakeBackend(["\\boxed{4}\nConfidence: 0.9"], model_name=settings.slm.name),
        llm=FakeBackend(["\\boxed{5}"], model_name=settings.llm.name))
    demo = app.build_demo(service, roles=Roles(token=TOKEN, host="0.0.0.0", on_space=False))
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", demo, service
    finally:
        demo.close()


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def _text(out) -> str:
    """Everything an endpoint returned, files included, as one string."""
    parts = []
    for x in out if isinstance(out, (list, tuple)) else [out]:
        if isinstance(x, str) and Path(x).is_file():
            parts.append(Path(x).read_text(encoding="utf-8", errors="replace"))
        parts.append(json.dumps(x, default=str))
    return "\n".join(parts)


def _raw_call(url, fn_index, data, session_hash) -> str:
    """Call an endpoint by index over plain HTTP, as a script that ignores the client could."""
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("gradio_api/queue/join",
                      json={"data": data, "fn_index": fn_index, "session_hash": session_hash,
                            "event_data": None, "trigger_id": None})
        if r.status_code != 200:
            return f"HTTP {r.status_code}: {r.text}"
        out = []
        with http.stream("GET", "gradio_api/queue/data",
                         params={"session_hash": session_hash}) as s:
            for line in s.iter_lines():
                out.append(line)
                if "process_completed" in line:
                    break
        return "\n".join(out)


def _args(name: str, alice_id: int):
    base = name.rstrip("_0123456789") if name[-1].isdigit() else name
    table = {
        "sign_in": ["wrong token"], "sign_out": [], "stop": [], "model_info": [],
        "respond": ["What is 1 + 1?", [], 0.7],
        "rate_up": [alice_id, "", "mine now"], "rate_down": [alice_id, "9", ""],
        "history_table": ["All", "All", ""], "export_jsonl": [], "refresh": [],
        "view": [INTERACTIONS, 0.7], "update_tau": [INTERACTIONS, 0.7],
        "paper_tau": [INTERACTIONS, 0.7], "deferral_tau": [INTERACTIONS, 0.7],
        "certified_tau": [INTERACTIONS, 0.7], "use_tau": [0.5, 0.7],
        "tier_controls": [INTERACTIONS], "tiers_view": [INTERACTIONS, 0.7, 0.7, 0.7, 0.7, 0.7],
    }
    assert base in table, f"new public endpoint /{name}: decide what a visitor may do with it"
    return table[base]


def test_anonymous_script_reads_and_changes_only_its_own_things(public_app):
    url, demo, service = public_app
    alice = _client(url)
    out = alice.predict(f"My {SECRET}. What is 2 + 2?", [], 0.7, api_name="/respond")
    alice_id = out[3]["value"]
    assert "logged as" in out[2]
    assert alice.predict(alice_id, "", "right", api_name="/rate_up").startswith("Saved rating")
    slm_before = service.settings.slm.name

    eve = _client(url)
    info = eve.view_api(return_format="dict", print_info=False)
    names = [n.lstrip("/") for n in info["named_endpoints"]]
    assert not info["unnamed_endpoints"]
    for bad in OWNER_ENDPOINTS:
        assert not any(n == bad or n.startswith(bad + "_") for n in names), bad
    seen = []
    for name in names:
        try:
            text = _text(eve.predict(*_args(name, alice_id), api_name=f"/{name}"))
        except Exception as exc:  # noqa: BLE001 — a refusal raised by Gradio itself
            text = f"{type(exc).__name__}: {exc}"
        seen.append(text)
        assert SECRET not in text and "right" not in text, name
        assert TOKEN not in text and "public.sqlite" not in text, name
    joined = "\n".join(seen)
    # rating alice's row was refused (by the dropdown's own choices, and the handler checks too)
    assert "not in the list of choices" in joined or "no interaction with id" in joined
    assert "Wrong owner token" in joined
    row = service.store.get_interaction(alice_id)
    assert (row["rating_thumbs"], row["rating_comment"]) == ("up", "right")

    # the owner endpoints are not callable through the client, and over raw HTTP they refuse
    fns = {getattr(f.fn, "__name__", ""): i for i, f in demo.fns.items()}
    with pytest.raises(Exception):
        eve.predict("/tmp", fn_index=fns["use_as_slm"])
    for fn, data in (("use_as_slm", ["/tmp"]),
                     ("start", ["cpu-smoke", "", 1, 2, 1.0, 1.0, 1.0]),
                     ("evaluate", ["/tmp", 5]), ("fit", [[], True, "logistic"]),
                     ("switch", ["x"]), ("view", [1])):
        reply = _raw_call(url, fns[fn], data, uuid.uuid4().hex)
        if fn in ("start", "fit", "switch"):  # inputs Gradio accepts: the handler refuses
            assert OWNER_ONLY.split(" ", 1)[1] in reply, (fn, reply[-300:])
        else:  # a checkpoint or run no visitor was offered: Gradio refuses it already
            assert OWNER_ONLY.split(" ", 1)[1] in reply or "not in the list of choices" in reply
    assert service.settings.slm.name == slm_before
    assert service.store.list_jobs() == []


def test_owner_signs_in_with_the_token(public_app):
    url, demo, service = public_app
    visitor = _client(url)
    visitor.predict("What is 2 + 2?", [], 0.7, api_name="/respond")
    owner = _client(url)
    assert "Visitor" in owner.predict(api_name="/sign_out")
    status, box = owner.predict(TOKEN, api_name="/sign_in")
    assert "Signed in as the owner" in status and box == ""
    rows, status = owner.predict("All", "All", "", api_name="/history_table")
    assert "all sessions" in status and len(rows["data"]) == 1
    fns = {getattr(f.fn, "__name__", ""): i for i, f in demo.fns.items()}
    # the same browser session may now use an owner action (too few ratings: a plain answer)
    reply = _raw_call(url, fns["fit"], [[], True, "logistic"], owner.session_hash)
    assert OWNER_ONLY.split(" ", 1)[1] not in reply and "process_completed" in reply
    # another session is still a visitor
    reply = _raw_call(url, fns["fit"], [[], True, "logistic"], uuid.uuid4().hex)
    assert OWNER_ONLY.split(" ", 1)[1] in reply
