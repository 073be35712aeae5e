"""Load: two app processes on one database, 16 concurrent chats through the real HTTP / Gradio
path (the Gradio Python client, one browser session each) on scripted backends. Every turn is
logged exactly once, in its own session, with its own answer, and every rating lands on its row.
Runs on SQLite (WAL) and on PostgreSQL (when COREA_TEST_PG_URL is set); loopback only, bounded in
time. The figures go to stdout (``pytest -s tests/test_load.py``) and docs/results.md."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from corea.store.storage import Store

pytest.importorskip("gradio_client")
httpx = pytest.importorskip("httpx")

HELPER = str(Path(__file__).parent / "helpers" / "serve_fake.py")
CHATS, TURNS = 16, 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url, proc, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


def test_two_processes_sixteen_chats_every_turn_once(db_url, tmp_path):
    from gradio_client import Client

    Store(db_url).close()  # the schema, before two processes race to create it
    servers, urls = [], []
    env = {**os.environ, "COREA_CACHE_DIR": str(tmp_path / "cache"),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    try:
        for _ in range(2):
            port = _free_port()
            p = subprocess.Popen([sys.executable, HELPER, db_url, str(port)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            servers.append(p)
            urls.append(f"http://127.0.0.1:{port}/")
        for u, p in zip(urls, servers):
            _wait_up(u, p)

        # one browser session each (connected one after another: a burst of 16 page loads on a
        # busy 2-core machine can time out, and it is not what is measured)
        clients = [Client(urls[c % 2], verbose=False) for c in range(CHATS)]
        done: dict[int, list] = {}
        errors: list[BaseException] = []

        def chat(c):
            try:
                client = clients[c]
                start.wait()
                mine = []
                for t in range(TURNS):
                    n = c * 100 + t
                    out = client.predict(f"chat {c} turn {t}: what is {n}?", [], 0.7,
                                         api_name="/respond")
                    rid = out[3]["value"]
                    msg = client.predict(rid, "", f"rating c{c} t{t}", api_name="/rate_up")
                    assert msg.startswith("Saved rating"), msg
                    mine.append((rid, n, client.session_hash))
                done[c] = mine
            except BaseException as exc:  # noqa: BLE001 — reported below
                errors.append(exc)

        t0 = 0.0

        def go():  # the clock starts when every chat is connected
            nonlocal t0
            t0 = time.perf_counter()

        start = threading.Barrier(CHATS, action=go)
        threads = [threading.Thread(target=chat, args=(c,)) for c in range(CHATS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=300)
        wall = time.perf_counter() - t0
        assert not errors, errors[:3]
    finally:
        for p in servers:
            p.terminate()
        for p in servers:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()

    with Store(db_url) as s:
        rows = s.list_interactions(limit=None)
        assert len(rows) == CHATS * TURNS  # every turn logged, none twice
        by_id = {r["id"]: r for r in rows}
        for c, mine in done.items():
            for t, (rid, n, session) in enumerate(mine):
                r = by_id[rid]
                assert r["question"] == f"chat {c} turn {t}: what is {n}?"
                assert r["session_id"] == session and r["final_answer"] == str(n)
                assert r["decision_defer"] == (n % 2 == 1)
                assert r["rating_comment"] == f"rating c{c} t{t}"  # the rating on its row
    kind = db_url.split(":", 1)[0].split("+")[0]
    turns = CHATS * TURNS
    figures = {"database": kind, "processes": 2, "chats": CHATS, "turns": turns,
               "wall_s": round(wall, 1), "turns_per_s": round(turns / wall, 1)}
    print("\nLOAD " + json.dumps(figures))
