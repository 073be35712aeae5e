"""Soak: two API server processes on one PostgreSQL log, scripted visitors, a worker crash and a
database outage; does every answered turn (and its rating) reach the log exactly once?

    python bench/soak.py --duration 270 --visitors 4     # writes bench/results/soak.{json,md}

What it does (loopback only, bounded in time, stops by itself):

1. Starts a throwaway PostgreSQL (``scripts/test_postgres.sh`` with ``COREA_PG_DIR=/tmp/soak-pg``
   and ``COREA_PG_PORT=54333``; ``--sqlite`` uses one SQLite file in WAL mode instead) and two
   ``python -m corea serve`` processes with the embedded models, each model in its supervised
   worker process (``COREA_SLM__ISOLATE=1 COREA_LLM__ISOLATE=1``), one thread per model.
2. Warms each server with one question (the models load in their workers), then ``--visitors``
   threads, alternating between the servers, ask short GSM8K-like questions back to back
   (streamed ``/v1/chat/completions``, ``max_tokens`` ``--max-tokens``, each question tagged
   ``[soak vV tT]`` so its row can be found) and rate every answered turn (``/v1/corea/ratings``).
3. Injects (a) at ``--crash-at`` s a SIGKILL of server 0's busiest model worker while a stream
   of server 0 is in flight, and (b) at ``--outage-at`` s ``test_postgres.sh pause``,
   ``--outage-s`` s later ``resume``.
4. After ``--duration`` s the visitors finish their turn; the journal (shared by both servers,
   ``<cache_dir>/journal``) is drained by a few more questions until it is empty; then the log
   is read: **rows lost** = answered requests whose question is not in the log, **duplicates** =
   questions logged more than once, **ratings lost** = rated turns whose row has no rating.

Reported: turns served, errors shown to clients by kind, rows / ratings lost, duplicates,
p50/p95 of the whole turn's latency and of time to first token (s), RSS of each server process
and of its workers (MiB, first and last sample after warm-up), whether each server answered
after every fault, and the load average (the machine may be shared: latencies are not a
benchmark of the models).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corea.journal import Journal, journal_path  # noqa: E402
from corea.store.storage import Store  # noqa: E402

WARM = -9  # the warm-up turns' visitor number
PG_ENV = {"COREA_PG_DIR": "/tmp/soak-pg", "COREA_PG_PORT": "54333"}
TEMPLATES = [
    "A baker makes {a} loaves in the morning and {b} in the afternoon. How many loaves is that?",
    "Tom has {a} marbles and gives away {b}. How many marbles does he have left?",
    "A box holds {a} pens. How many pens are in {b} boxes?",
    "Sara reads {a} pages a day. How many pages does she read in {b} days?",
    "A bus has {a} seats and {b} people. How many seats are empty?",
]


@dataclass
class Turn:
    """One request as its visitor saw it (times in s since the soak's start)."""

    visitor: int
    server: int
    question: str
    start: float
    end: float = 0.0
    ttft_s: float | None = None
    ok: bool = False
    error: str | None = None  # the error's kind as shown to the client
    interaction_id: int | None = None
    status: str | None = None  # the corea object's status (ok / degraded / error)
    decision: str | None = None  # kept / deferred
    tier_errors: list[str] = field(default_factory=list)  # a tier's engine error, answered anyway
    rated: bool = False
    rating_error: str | None = None


@dataclass
class Soak:
    """The run's shared state."""

    t0: float
    urls: list[str]
    deadline: float
    turns: list[Turn] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=lambda: [0, 0])
    faults: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.t0


# ----------------------------------------------------------------------------- one turn

def ask(client: httpx.Client, soak: Soak, server: int, visitor: int, question: str,
        max_tokens: int) -> Turn:
    """One streamed question and, when answered, its rating."""
    turn = Turn(visitor, server, question, soak.now())
    body = {"model": "corea", "stream": True, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": question}]}
    with soak.lock:
        soak.in_flight[server] += 1
    try:
        with client.stream("POST", soak.urls[server] + "/v1/chat/completions", json=body,
                           timeout=httpx.Timeout(300, connect=10)) as r:
            if r.status_code != 200:
                r.read()
                code = (r.json().get("error") or {}).get("code") if r.content else None
                turn.error = f"http_{r.status_code}:{code}"
            else:
                read_stream(r, turn, soak)
    except httpx.TimeoutException:
        turn.error = "timeout"
    except httpx.HTTPError as exc:
        turn.error = f"connection:{type(exc).__name__}"
    finally:
        with soak.lock:
            soak.in_flight[server] -= 1
        turn.end = soak.now()
    if turn.ok:
        rate(client, soak, turn)
    return turn


def read_stream(r: httpx.Response, turn: Turn, soak: Soak) -> None:
    """The SSE stream: the first content token's time, an error body, the ``corea`` object."""
    corea = None
    for line in r.iter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        d = json.loads(line[6:])
        if "error" in d:
            turn.error = f"stream:{d['error'].get('code')}"
            turn.status = (d.get("corea") or {}).get("status")
            turn.interaction_id = (d.get("corea") or {}).get("interaction_id")
            return
        for ch in d.get("choices") or []:
            if turn.ttft_s is None and (ch.get("delta") or {}).get("content"):
                turn.ttft_s = soak.now() - turn.start
        corea = d.get("corea") or corea
    if corea is None:
        turn.error = "stream:no_final_chunk"
        return
    turn.ok, turn.status, turn.interaction_id = True, corea["status"], corea["interaction_id"]
    turn.decision = corea.get("decision")
    turn.tier_errors = [t["error"] for t in corea.get("tiers") or [] if t.get("error")]


def rate(client: httpx.Client, soak: Soak, turn: Turn) -> None:
    try:
        r = client.post(soak.urls[turn.server] + "/v1/corea/ratings", timeout=60,
                        json={"interaction_id": turn.interaction_id, "thumbs": "up",
                              "comment": "rated " + turn.question[:20]})
        turn.rated = r.status_code == 200
        if not turn.rated:
            turn.rating_error = f"http_{r.status_code}"
    except httpx.HTTPError as exc:
        turn.rating_error = type(exc).__name__


def question(rng: random.Random, tag: str) -> str:
    return f"[soak {tag}] " + rng.choice(TEMPLATES).format(a=rng.randint(12, 90),
                                                          b=rng.randint(2, 11))


def visitor(soak: Soak, v: int, max_tokens: int) -> None:
    rng = random.Random(v)
    with httpx.Client() as client:
        t = 0
        while soak.now() < soak.deadline:
            turn = ask(client, soak, v % 2, v, question(rng, f"v{v} t{t}"), max_tokens)
            with soak.lock:
                soak.turns.append(turn)
            t += 1
            if not turn.ok:
                time.sleep(1.0)


# ----------------------------------------------------------------------------- faults

def workers_of(pid: int) -> list[psutil.Process]:
    """The model worker processes (``python -m corea.backends.worker``) under ``pid``."""
    out = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if "corea.backends.worker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def kill_busiest_worker(soak: Soak, server_pid: int, at: float) -> None:
    """At ``at`` s, once server 0 has a stream in flight, SIGKILL its worker using most CPU."""
    while soak.now() < at or soak.in_flight[0] == 0:
        if soak.now() > soak.deadline:
            soak.faults.append({"kind": "worker_crash", "skipped": "no stream in flight"})
            return
        time.sleep(0.2)
    procs = workers_of(server_pid)
    before = {p.pid: sum(p.cpu_times()[:2]) for p in procs}
    time.sleep(1.0)
    if not procs:
        soak.faults.append({"kind": "worker_crash", "skipped": "no worker found"})
        return
    busy = max(procs, key=lambda p: sum(p.cpu_times()[:2]) - before[p.pid])
    rss_mib = round(busy.memory_info().rss / 2**20)  # ~0.6 GiB: the SLM's, ~1.9 GiB: the LLM's
    t = soak.now()
    os.kill(busy.pid, signal.SIGKILL)
    soak.faults.append({"kind": "worker_crash", "server": 0, "pid": busy.pid, "at_s": round(t, 1),
                        "end_s": round(t, 1), "in_flight": soak.in_flight[0], "rss_mib": rss_mib,
                        "workers_before": sorted(before)})


def db_outage(soak: Soak, at: float, seconds: float) -> None:
    while soak.now() < at:
        time.sleep(0.2)
    t = soak.now()
    subprocess.run(["bash", "scripts/test_postgres.sh", "pause"], cwd=ROOT, check=True,
                   env={**os.environ, **PG_ENV})
    time.sleep(seconds)
    subprocess.run(["bash", "scripts/test_postgres.sh", "resume"], cwd=ROOT, check=True,
                   env={**os.environ, **PG_ENV})
    soak.faults.append({"kind": "db_outage", "at_s": round(t, 1), "end_s": round(soak.now(), 1)})


def sample_rss(soak: Soak, pids: list[int], out: list[dict], stop: threading.Event) -> None:
    """Every 10 s: each server's own RSS and its workers' total (MiB)."""
    while not stop.is_set():
        row = {"t_s": round(soak.now(), 1)}
        for i, pid in enumerate(pids):
            try:
                row[f"server{i}_mib"] = psutil.Process(pid).memory_info().rss / 2**20
                row[f"workers{i}_mib"] = sum(p.memory_info().rss for p in workers_of(pid)) / 2**20
            except psutil.Error:
                pass
        out.append(row)
        stop.wait(10)


# ----------------------------------------------------------------------------- servers

def start_database(sqlite_dir: str | None) -> str:
    """The log's URL: a fresh PostgreSQL (or a SQLite file in WAL mode) with the schema."""
    if sqlite_dir is not None:
        url = f"sqlite:///{sqlite_dir}/soak.sqlite"
    else:
        out = subprocess.run(["bash", "scripts/test_postgres.sh", "start"], cwd=ROOT, check=True,
                             env={**os.environ, **PG_ENV}, capture_output=True, text=True)
        url = out.stdout.strip().split("=", 1)[1].strip("'")
    Store(url).close()  # the schema, before two processes race to create it
    return url


def start_servers(url: str, ports: list[int], logdir: str) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COREA_DB_URL": url,
           "COREA_SLM__ISOLATE": "1", "COREA_LLM__ISOLATE": "1",
           "COREA_SLM__N_THREADS": "1", "COREA_LLM__N_THREADS": "1",
           "COREA_API_RATE_PER_MINUTE": "0", "COREA_API_MAX_CONCURRENT": "8"}
    env.pop("COREA_API_KEYS", None)
    procs = []
    for i, port in enumerate(ports):
        log = open(Path(logdir) / f"server{i}.log", "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "corea", "serve", "--port", str(port), "--log-level",
             "warning"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    for p, port in zip(procs, ports):
        end = time.monotonic() + 180
        while True:
            if p.poll() is not None:
                raise RuntimeError(f"server on {port} exited ({p.returncode}); see {logdir}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"server on {port} did not start")
            time.sleep(0.5)
    return procs


def drain(soak: Soak, journal: Journal, max_tokens: int, tries: int = 12) -> list[int]:
    """Ask one more question per server until the shared journal is empty (a turn replays it
    once the database is back); returns the journal's size before each try."""
    sizes = []
    with httpx.Client() as client:
        for i in range(tries):
            sizes.append(journal.pending())
            if sizes[-1] == 0:
                break
            for s in (0, 1):
                soak.turns.append(ask(client, soak, s, -1 - s, question(random.Random(i),
                                                                       f"drain{i} s{s}"),
                                      max_tokens))
            time.sleep(6)
    return sizes


# ----------------------------------------------------------------------------- the report

def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 2)


def check_log(url: str, turns: list[Turn]) -> dict:
    """Rows and ratings lost, duplicates, errors logged (see the module docstring)."""
    with Store(url) as s:
        rows = [r for r in s.list_interactions(limit=None) if r["question"].startswith("[soak ")]
    by_q: dict[str, list[dict]] = {}
    for r in rows:
        by_q.setdefault(r["question"], []).append(r)
    ok = [t for t in turns if t.ok]
    failed = [t for t in turns if not t.ok]
    return {
        "rows_in_log": len(rows),
        "rows_lost": sum(1 for t in ok if t.question not in by_q),
        "duplicates": sum(len(v) - 1 for v in by_q.values()),
        "ratings_sent": sum(t.rated for t in ok),
        "ratings_lost": sum(1 for t in ok if t.rated and not any(
            (r.get("rating_comment") or "") == "rated " + t.question[:20]
            for r in by_q.get(t.question, []))),
        "failed_turns_logged": sum(1 for t in failed if t.question in by_q),
        "rows_not_asked": len(set(by_q) - {t.question for t in turns}),
    }


def answered_after(turns: list[Turn], faults: list[dict]) -> list[dict]:
    out = []
    for f in faults:
        if "end_s" not in f:
            continue
        firsts = []
        for s in (0, 1):
            t = min((t.end for t in turns if t.ok and t.server == s and t.start >= f["end_s"]
                     and t.visitor != WARM),
                    default=None)
            firsts.append(None if t is None else round(t - f["end_s"], 1))
        out.append({"fault": f["kind"], "answered_after": [x is not None for x in firsts],
                    "first_answer_after_s": firsts})
    return out


def counts(xs) -> dict:
    out: dict = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return out


def summarise(soak: Soak, log_check: dict, rss: list[dict], args, meta: dict) -> dict:
    ok = [t for t in soak.turns if t.ok]
    timed = [t for t in ok if t.visitor != WARM]  # the warm-up turns load the models
    warm = [r for r in rss if len(r) > 1]
    mem = {}
    for k in (warm[0] if warm else {}):
        if k != "t_s":
            mem[k] = {"first": round(warm[0][k], 1), "last": round(warm[-1].get(k, 0), 1),
                      "max": round(max(r.get(k, 0) for r in warm), 1)}
    return {
        **meta, "args": vars(args),
        "turns": len(soak.turns), "turns_served": len(ok), "turn_status": counts(t.status for t in ok),
        "decisions": counts(t.decision for t in ok),
        "errors_shown": counts(t.error for t in soak.turns if t.error),
        "answered_despite_tier_error": counts(e[:60] for t in ok for e in t.tier_errors),
        "answered_while_journaled": sum(1 for t in ok if (t.interaction_id or 0) < 0),
        "rating_errors": counts(t.rating_error for t in ok if t.rating_error),
        **log_check,
        "latency_s": {"p50": pct([t.end - t.start for t in timed], 0.5),
                      "p95": pct([t.end - t.start for t in timed], 0.95)},
        "ttft_s": {"p50": pct([t.ttft_s for t in timed if t.ttft_s], 0.5),
                   "p95": pct([t.ttft_s for t in timed if t.ttft_s], 0.95)},
        "rss_mib": mem, "faults": soak.faults,
        "after_faults": answered_after(soak.turns, soak.faults),
        "turn_log": [asdict(t) for t in soak.turns],
    }


def markdown(r: dict, command: str) -> str:
    mem = "; ".join(f"{k} {v['first']:.0f}→{v['last']:.0f} MiB (max {v['max']:.0f})"
                    for k, v in r["rss_mib"].items())
    after = "; ".join(f"{a['fault']}: server 0 {a['answered_after'][0]}, server 1 "
                      f"{a['answered_after'][1]} (first answers {a['first_answer_after_s']} s "
                      "after)" for a in r["after_faults"])
    return f"""# Soak: two servers, one {r['database']} log, a worker crash and a database outage

Command (from the repository root): `{command}`

Run {r['started_utc']}, {r['traffic_s']:.0f} s of traffic, {r['args']['visitors']} visitors,
commit {r['commit']}. Load average before / after: {r['loadavg_before']} / {r['loadavg_after']}
on {r['cpus']} CPUs, **shared with other jobs** — the latencies are this machine's at that time,
not a benchmark of the models.

| figure | value |
| --- | --- |
| turns asked / served | {r['turns']} / {r['turns_served']} (status {r['turn_status']}, {r['decisions']}) |
| errors shown to clients | {r['errors_shown'] or 'none'} |
| answered although a tier's engine failed | {r['answered_despite_tier_error'] or 'none'} |
| answered while the database was away (journaled) | {r['answered_while_journaled']} |
| rows lost / duplicates | **{r['rows_lost']}** / {r['duplicates']} |
| ratings sent / lost | {r['ratings_sent']} / {r['ratings_lost']} |
| failed turns logged (engine error rows) | {r['failed_turns_logged']} |
| latency p50 / p95 (s) | {r['latency_s']['p50']} / {r['latency_s']['p95']} |
| time to first token p50 / p95 (s) | {r['ttft_s']['p50']} / {r['ttft_s']['p95']} |
| journal size at each drain try | {r['journal_drain']} |
| RSS (first → last sample after warm-up) | {mem} |
| answered after each fault | {after} |

Faults: {json.dumps(r['faults'])}
"""


def traffic(soak: Soak, procs: list[subprocess.Popen], args, journal: Journal,
            meta: dict) -> list[dict]:
    """The visitors, the faults and the RSS sampler until the deadline, then the drain; returns
    the RSS samples and records the traffic's length, the drain and the servers' state in
    ``meta``."""
    stop = threading.Event()
    rss: list[dict] = []
    threads = [threading.Thread(target=visitor, args=(soak, v, args.max_tokens))
               for v in range(args.visitors)]
    threads += [threading.Thread(target=kill_busiest_worker,
                                 args=(soak, procs[0].pid, args.crash_at)),
                threading.Thread(target=sample_rss, args=(soak, [p.pid for p in procs], rss, stop))]
    if not args.sqlite:
        threads.append(threading.Thread(target=db_outage,
                                        args=(soak, args.outage_at, args.outage_s)))
    for th in threads:
        th.start()
    for th in threads[:args.visitors]:
        th.join()
    meta["traffic_s"] = soak.now()
    meta["journal_drain"] = drain(soak, journal, args.max_tokens)
    meta["alive_at_end"] = [p.poll() is None for p in procs]
    stop.set()
    for th in threads[args.visitors:]:
        th.join(timeout=60)
    return rss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=270, help="seconds of traffic")
    ap.add_argument("--visitors", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--crash-at", type=float, default=60)
    ap.add_argument("--outage-at", type=float, default=140)
    ap.add_argument("--outage-s", type=float, default=20)
    ap.add_argument("--sqlite", action="store_true", help="SQLite (WAL) instead of PostgreSQL")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = ap.parse_args(argv)
    from corea.config import Settings

    meta = {"started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
            "database": "sqlite" if args.sqlite else "postgresql",
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                     capture_output=True, text=True).stdout.strip()}
    tmp = tempfile.mkdtemp(prefix="corea-soak-")
    url = start_database(tmp if args.sqlite else None)
    journal = Journal(journal_path(Settings().cache_dir, url))
    meta["journal_pending_at_start"] = journal.pending()
    ports = [54341, 54342]
    procs: list[subprocess.Popen] = []
    try:
        procs = start_servers(url, ports, tmp)
        soak = Soak(time.monotonic(), [f"http://127.0.0.1:{p}" for p in ports], 0)
        with httpx.Client() as c:  # the models load in their workers
            warm = [ask(c, soak, s, WARM, question(random.Random(s), f"warm s{s}"),
                        args.max_tokens) for s in (0, 1)]
        meta["warmup_s"] = [round(t.end - t.start, 1) for t in warm]
        meta["warmup_errors"] = [t.error for t in warm]
        shift = time.monotonic() - soak.t0
        soak = Soak(time.monotonic(), soak.urls, args.duration)
        for t in warm:  # on the soak's clock: before 0
            t.start, t.end = t.start - shift, t.end - shift
        soak.turns.extend(warm)  # checked against the log too
        rss = traffic(soak, procs, args, journal, meta)
        meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        report = summarise(soak, check_log(url, soak.turns), rss, args, meta)
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if not args.sqlite:
            subprocess.run(["bash", "scripts/test_postgres.sh", "stop"], cwd=ROOT,
                           env={**os.environ, **PG_ENV})
    command = "python bench/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(report, command))
    print(markdown(report, command))
    return 0 if report["rows_lost"] == 0 and report["duplicates"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
