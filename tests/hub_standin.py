"""A local stand-in of the Hugging Face Hub's HTTP API, for tests (no Hub access here).

Implements only what :mod:`corea.export.hub` and ``load_dataset`` over downloaded files need,
as ``huggingface_hub`` 2.x calls it with ``endpoint=``:

- ``POST /api/repos/create`` (409 when the repository exists);
- ``GET /api/{type}s/{repo}[/revision/{rev}]`` (head commit and file list);
- ``POST /api/validate-yaml`` (the card's front matter must parse as YAML: 400 otherwise);
- ``POST /api/{type}s/{repo}/preupload/{rev}`` (every file "regular": no LFS / Xet upload);
- ``POST /api/{type}s/{repo}/commit/{rev}`` (NDJSON with base64 files; atomic; ``parentCommit``
  checked: 412 when stale);
- ``HEAD`` / ``GET /{type}s/{repo}/resolve/{rev}/{path}`` (any commit of the history).

Every commit's tree is kept in memory; the head's files are also written under ``root/<repo>``.
Faults: ``fail_commits`` commits answered 500 *before* applying, ``lose_replies`` applied then
answered 500 (a reply lost in flight). Write calls must carry ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml


def git_oid(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports as a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, visibility: str):
        self.visibility = visibility
        self.head = hashlib.sha1(b"init").hexdigest()
        self.trees: dict[str, dict[str, bytes]] = {self.head: {}}
        self.commits: list[str] = []  # summaries, oldest first

    @property
    def files(self) -> dict[str, bytes]:
        return self.trees[self.head]


class StandInHub:
    """Start with ``StandInHub(root, token).start()``; ``url`` is the endpoint; ``stop()``."""

    def __init__(self, root: Path, token: str):
        self.root, self.token = Path(root), token
        self.repos: dict[str, Repo] = {}
        self.fail_commits = 0
        self.lose_replies = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> StandInHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def folder(self, repo_id: str) -> Path:
        return self.root / repo_id

    def apply(self, repo_id: str, summary: str, files: dict[str, bytes]) -> str:
        repo = self.repos[repo_id]
        tree = dict(repo.files) | files
        oid = hashlib.sha1((repo.head + summary + json.dumps(sorted(
            (p, git_oid(d)) for p, d in tree.items()))).encode()).hexdigest()
        repo.trees[oid], repo.head = tree, oid
        repo.commits.append(summary)
        out = self.folder(repo_id)
        shutil.rmtree(out, ignore_errors=True)
        for path, data in tree.items():
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            (out / path).write_bytes(data)
        return oid


_API = re.compile(r"^/api/(model|dataset|space)s/([^/]+/[^/]+)/"
                  r"(revision|preupload|commit)/([^/]+)$")
_INFO = re.compile(r"^/api/(model|dataset|space)s/([^/]+/[^/]+)$")
_RESOLVE = re.compile(r"^/(?:(dataset|space)s/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class _Handler(BaseHTTPRequestHandler):
    """The routes; ``hub`` is set on a subclass per server (:func:`_handler`)."""

    hub: StandInHub

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code: int, body=None, headers: dict | None = None, head=False):
        data = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
        self.send_response(code)
        for k, v in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.hub.token}":
            return True
        self._send(401, {"error": "Invalid credentials"})
        return False

    def _readable(self, repo_id: str) -> Repo | None:
        """The repository, if it exists and this caller may read it (a private one needs
        the token; otherwise it reads as missing, as on the Hub)."""
        repo = self.hub.repos.get(repo_id)
        if repo is not None and repo.visibility == "private" and \
                self.headers.get("Authorization") != f"Bearer {self.hub.token}":
            return None
        return repo

    def _missing(self):
        self._send(404, {"error": "Repository not found"},
                   {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"})

    def do_POST(self):
        path, body = urlsplit(self.path).path, self._body()
        if not self._authorized():
            return
        if path == "/api/repos/create":
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}"
            with self.hub.lock:
                if repo_id in self.hub.repos:
                    return self._send(409, {"error": "You already created this dataset repo",
                                           "url": f"{self.hub.url}/datasets/{repo_id}"})
                self.hub.repos[repo_id] = Repo(req.get("visibility") or (
                    "private" if req.get("private") else "public"))
            return self._send(200, {"url": f"{self.hub.url}/datasets/{repo_id}"})
        if path == "/api/validate-yaml":
            text = json.loads(body)["content"]
            try:
                meta = yaml.safe_load(text.split("---")[1])
                assert isinstance(meta, dict)
            except Exception as exc:
                return self._send(400, {"errors": [{"message": str(exc)}]})
            return self._send(200, {"errors": [], "warnings": []})
        m = _API.match(path)
        if not m or m.group(2) not in self.hub.repos:
            return self._missing()
        repo_id, repo = m.group(2), self.hub.repos[m.group(2)]
        if m.group(3) == "preupload":
            files = json.loads(body)["files"]
            return self._send(200, {"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                 "oid": git_oid(repo.files[f["path"]]) if f["path"] in repo.files else None}
                for f in files]})
        return self._commit(repo_id, repo, body)

    def _commit(self, repo_id, repo, body):
        lines = [json.loads(x) for x in body.splitlines() if x.strip()]
        header = lines[0]["value"]
        files = {x["value"]["path"]: base64.b64decode(x["value"]["content"])
                 for x in lines[1:] if x["key"] == "file"}
        with self.hub.lock:
            if self.hub.fail_commits:
                self.hub.fail_commits -= 1
                return self._send(500, {"error": "Internal Error (echo: "
                                        f"{self.headers.get('Authorization')})"})
            parent = header.get("parentCommit")
            if parent is not None and parent != repo.head:
                return self._send(412, {"error": "A commit has happened since"})
            oid = self.hub.apply(repo_id, header["summary"], files)
            if self.hub.lose_replies:
                self.hub.lose_replies -= 1
                return self._send(500, {"error": "Internal Error"})
        return self._send(200, {"commitUrl": f"{self.hub.url}/datasets/{repo_id}/commit/{oid}",
                                "commitOid": oid})

    def do_GET(self, head=False):
        path = unquote(urlsplit(self.path).path)
        m = _API.match(path) or _INFO.match(path)
        if m and (m.re is _INFO or m.group(3) == "revision"):
            repo = self._readable(m.group(2))
            if repo is None:
                return self._missing()
            return self._send(200, {
                "id": m.group(2), "sha": repo.head, "private": repo.visibility == "private",
                "siblings": [{"rfilename": p, "size": len(d)} for p, d in
                             sorted(repo.files.items())]}, head=head)
        m = _RESOLVE.match(path)
        repo = self._readable(m.group(2)) if m else None
        if repo is None:
            return self._missing()
        rev = repo.head if m.group(3) == "main" else m.group(3)
        data = repo.trees.get(rev, {}).get(m.group(4))
        if data is None:
            return self._send(404, {"error": "Entry not found"},
                              {"Content-Type": "application/json",
                               "X-Error-Code": "EntryNotFound"}, head=head)
        return self._send(200, data, {"Content-Type": "application/octet-stream",
                                      "X-Repo-Commit": rev, "ETag": f'"{git_oid(data)}"'},
                          head=head)

    def do_HEAD(self):
        self.do_GET(head=True)


def _handler(hub: StandInHub) -> type[_Handler]:
    return type("Handler", (_Handler,), {"hub": hub})
