"""A small Hugging Face Hub-compatible HTTP server for tests (stdlib only).

It implements what ``huggingface_hub`` 2.4 and ``datasets`` 5.2 call to push a dataset and load it
back: repo create and info, preupload, LFS batch + upload (basic transfer), commit (ndjson),
validate-yaml, tree, paths-info and resolve (with ranges). Repositories are kept on disk under
``root``: content-addressed blobs in ``objects/`` and one JSON file of commits per repository, so a
test can inspect (and grep) everything the client sent. Writes need ``Authorization: Bearer
<token>``; the tokens seen are counted in memory only, never written.

Start it with ``HubServer(root, token).start()``; point ``HF_ENDPOINT`` at ``server.url``, with
``HF_HUB_DISABLE_XET=1`` set before ``huggingface_hub`` is imported (this server speaks LFS, not Xet).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_TYPES = {"datasets": "dataset", "spaces": "space", "models": "model"}
SHA1 = re.compile(r"^[0-9a-f]{40}$")


class HubError(Exception):
    """An HTTP error with the Hub's ``X-Error-Code`` (how huggingface_hub tells 404s apart)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Entry:
    """One file of a commit: its content's sha256 (the blob name) and how it was stored."""

    sha256: str
    size: int
    lfs: bool
    blob_sha1: str = ""  # git blob id of a regular file's content

    @property
    def git_oid(self) -> str:
        """What git would store: the pointer file for an LFS file, else the content."""
        return _git_sha1(self.pointer()) if self.lfs else self.blob_sha1

    def pointer(self) -> bytes:
        spec = "version https://git-lfs.github.com/spec/v1"
        return f"{spec}\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    def as_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "lfs": self.lfs, "blob_sha1": self.blob_sha1}


@dataclass
class Commit:
    sha: str
    parent: str | None
    summary: str
    date: str
    files: dict[str, Entry] = field(default_factory=dict)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: str
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def resolve(self, revision: str) -> Commit:
        rev = unquote(revision)
        if rev in ("main", "refs/heads/main"):
            return self.head
        for c in self.commits:
            if SHA1.match(rev) and c.sha == rev:
                return c
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")


class HubState:
    """Repositories and blobs, persisted under ``root`` after every change."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lock = threading.Lock()

    def blob(self, sha256: str) -> bytes:
        return (self.objects / sha256).read_bytes()

    def has_blob(self, sha256: str) -> bool:
        return (self.objects / sha256).is_file()

    def put_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (self.objects / digest).write_bytes(data)
        return digest

    def repo(self, repo_type: str, repo_id: str) -> Repo:
        try:
            return self.repos[(repo_type, repo_id)]
        except KeyError:
            raise HubError(404, "Repository not found", "RepoNotFound") from None

    def create(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        now = _now()
        repo = Repo(repo_type, repo_id, private, now)
        first = Commit(_sha1(f"init {repo_type} {repo_id} {now}".encode()), None, "initial commit", now)
        first.files[".gitattributes"] = self._regular(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n")
        repo.commits.append(first)
        self.repos[(repo_type, repo_id)] = repo
        self.save(repo)
        return repo

    def _regular(self, data: bytes) -> Entry:
        return Entry(self.put_blob(data), len(data), False, _git_sha1(data))

    def commit(self, repo: Repo, lines: list[dict[str, Any]]) -> Commit:
        header = next((x["value"] for x in lines if x.get("key") == "header"), None)
        if header is None:
            raise HubError(400, "commit payload has no header line")
        parent = header.get("parentCommit")
        if parent and parent != repo.head.sha:
            raise HubError(412, f"parent commit {parent} is not the head of main")
        files = dict(repo.head.files)
        for item in lines:
            key, value = item.get("key"), item.get("value", {})
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = self._regular(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                oid = value["oid"]
                if not self.has_blob(oid):
                    raise HubError(400, f"LFS object {oid} of {value['path']} was never uploaded")
                files[value["path"]] = Entry(oid, int(value["size"]), True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"cannot delete {value['path']}: no such file", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(prefix)]:
                    del files[path]
            elif key != "header":
                raise HubError(400, f"unsupported commit operation {key!r}")
        now = _now()
        listing = json.dumps({p: e.sha256 for p, e in sorted(files.items())}).encode()
        sha = _sha1(repo.head.sha.encode() + listing + header.get("summary", "").encode() + now.encode())
        commit = Commit(sha, repo.head.sha, header.get("summary", ""), now, files)
        repo.commits.append(commit)
        self.save(repo)
        return commit

    def save(self, repo: Repo) -> None:
        path = self.root / "repos" / repo.repo_type / f"{repo.repo_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "repo_type": repo.repo_type,
            "repo_id": repo.repo_id,
            "private": repo.private,
            "commits": [
                {
                    "sha": c.sha,
                    "parent": c.parent,
                    "summary": c.summary,
                    "date": c.date,
                    "files": {p: e.as_json() for p, e in c.files.items()},
                }
                for c in repo.commits
            ],
        }
        path.write_text(json.dumps(doc, indent=1))


class HubServer:
    """The server in a daemon thread on 127.0.0.1 and a random free port."""

    def __init__(self, root: Path, token: str) -> None:
        self.state = HubState(Path(root))
        self.token = token
        self.tokens_seen: Counter[str] = Counter()  # "valid" / "invalid" / "none", per request
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status), no headers
        handler = type("Handler", (_Handler,), {"hub": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._secret = secrets.token_bytes(16)
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="hub-server", daemon=True)

    def sign(self, oid: str) -> str:
        """The upload signature of an LFS object (a per-server secret, never the user's token)."""
        return hmac.new(self._secret, oid.encode(), hashlib.sha256).hexdigest()

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(10)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # requests are recorded without headers
        pass

    # -- plumbing --------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.body = self._read_body()
        self.auth = self._auth()
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        status = 500
        try:
            status = self._route(method, parts)
        except HubError as err:
            status = err.status
            self._send_json({"error": err.message}, err.status, code=err.code)
        except Exception as exc:  # a bug in this server: report it to the client as a 500
            self._send_json({"error": f"{type(exc).__name__}: {exc}"}, 500)
        self.hub.requests.append((method, url.path, status))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _auth(self) -> str:
        header = self.headers.get("Authorization", "")
        if not header:
            kind = "none"
        elif header == f"Bearer {self.hub.token}":
            kind = "valid"
        else:
            kind = "invalid"
        self.hub.tokens_seen[kind] += 1
        return kind

    def _require_write(self) -> None:
        if self.auth == "none":
            raise HubError(401, "You must be authenticated to write")
        if self.auth == "invalid":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _require_read(self, repo: Repo) -> None:
        if repo.private and self.auth != "valid":
            raise HubError(404, "Repository not found", "RepoNotFound")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> int:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _send_json(self, doc: Any, status: int = 200, code: str | None = None) -> int:
        headers = {"Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        if status >= 400:
            headers["X-Error-Message"] = doc.get("error", "") if isinstance(doc, dict) else ""
        return self._send(status, json.dumps(doc).encode(), headers)

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as exc:
            raise HubError(400, f"body is not JSON: {exc}") from None

    # -- routes ----------------------------------------------------------------------------------
    def _route(self, method: str, parts: list[str]) -> int:
        state = self.hub.state
        if parts[:1] == ["api"]:
            return self._api(method, parts[1:])
        if parts[:1] == ["lfs-upload"] and method == "PUT":
            # Like an S3 presigned URL: no Authorization header, a signature in the query instead.
            oid = parts[1]
            if self.query.get("sig", [""])[0] != self.hub.sign(oid):
                raise HubError(403, "bad or missing upload signature")
            if hashlib.sha256(self.body).hexdigest() != oid:
                raise HubError(400, f"uploaded content does not match oid {oid}")
            with state.lock:
                state.put_blob(self.body)
            return self._send(200, b"")
        repo_type = REPO_TYPES.get(parts[0], "model") if parts else "model"
        rest = parts[1:] if parts and parts[0] in REPO_TYPES else parts
        if len(rest) >= 2 and rest[1].endswith(".git") and rest[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(repo_type, f"{rest[0]}/{rest[1][:-4]}")
        if len(rest) >= 4 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
        raise HubError(404, f"no route for {method} /{'/'.join(parts)}")

    def _api(self, method: str, parts: list[str]) -> int:
        state = self.hub.state
        if parts == ["whoami-v2"] and method == "GET":
            self._require_write()
            return self._send_json({"type": "user", "name": "tester", "orgs": [], "auth": {}})
        if parts == ["repos", "create"] and method == "POST":
            self._require_write()
            doc = self._json_body()
            repo_type = doc.get("type") or "model"
            repo_id = f"{doc['organization']}/{doc['name']}" if doc.get("organization") else doc["name"]
            if "/" not in repo_id:
                repo_id = f"tester/{repo_id}"
            with state.lock:
                if (repo_type, repo_id) in state.repos:
                    return self._send_json({"error": "You already created this repo", "url": ""}, 409)
                # huggingface_hub 2.x sends "visibility" (public/private/protected); 0.x sent "private".
                private = doc.get("visibility", "public") != "public" or bool(doc.get("private"))
                state.create(repo_type, repo_id, private)
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            return self._send_json({"url": f"{self.hub.url}/{prefix}{repo_id}", "name": repo_id})
        if parts == ["validate-yaml"] and method == "POST":
            doc = self._json_body()
            try:
                meta = _front_matter(doc.get("content", ""))
            except yaml.YAMLError as exc:
                raise HubError(400, f"invalid YAML: {exc}") from None
            if meta is not None and not isinstance(meta, dict):
                raise HubError(400, "the YAML metadata must be a mapping")
            return self._send_json({"errors": [], "warnings": []})
        if len(parts) >= 3 and parts[0] in REPO_TYPES:
            repo = state.repo(REPO_TYPES[parts[0]], f"{parts[1]}/{parts[2]}")
            self._require_read(repo)
            verb, args = (parts[3], parts[4:]) if len(parts) > 3 else ("info", [])
            if verb == "info" or (verb == "revision" and method == "GET"):
                return self._repo_info(repo, args[0] if args else "main")
            if verb == "preupload" and method == "POST":
                self._require_write()
                return self._preupload()
            if verb == "commit" and method == "POST":
                self._require_write()
                repo.resolve(args[0])  # the branch must exist
                lines = [json.loads(x) for x in self.body.splitlines() if x.strip()]
                with state.lock:
                    commit = state.commit(repo, lines)
                prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
                return self._send_json(
                    {
                        "commitUrl": f"{self.hub.url}/{prefix}{repo.repo_id}/commit/{commit.sha}",
                        "commitOid": commit.sha,
                        "success": True,
                        "pullRequestUrl": None,
                    }
                )
            if verb == "tree" and method == "GET":
                commit = repo.resolve(args[0])
                recursive = self.query.get("recursive", ["false"])[0].lower() == "true"
                return self._send_json(_tree(commit, "/".join(args[1:]).strip("/"), recursive))
            if verb == "paths-info" and method == "POST":
                commit = repo.resolve(args[0])
                form = parse_qs(self.body.decode())
                paths = form.get("paths", [])
                if not paths and self.body.strip().startswith(b"{"):
                    paths = self._json_body().get("paths", [])
                return self._send_json([e for p in paths if (e := _path_info(commit, p)) is not None])
        raise HubError(404, f"no route for {method} /api/{'/'.join(parts)}")

    def _repo_info(self, repo: Repo, revision: str) -> int:
        commit = repo.resolve(revision)
        card: Any = None
        if "README.md" in commit.files:
            try:
                card = _front_matter(self.hub.state.blob(commit.files["README.md"].sha256).decode())
            except yaml.YAMLError:
                card = None
        return self._send_json(
            {
                "_id": _sha1(repo.repo_id.encode())[:24],
                "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": commit.sha,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "createdAt": repo.created,
                "lastModified": commit.date,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "cardData": card if isinstance(card, dict) else None,
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            }
        )

    def _preupload(self) -> int:
        files = self._json_body().get("files", [])
        out = []
        for f in files:
            sample = base64.b64decode(f.get("sample", ""))
            # The Hub stores binary files (and big ones) in LFS; text goes into git.
            lfs = b"\x00" in sample or int(f.get("size", 0)) > 10_000_000 or f["path"].endswith(".parquet")
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        return self._send_json({"files": out, "commitOid": None})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> int:
        self._require_write()
        state = self.hub.state
        repo = state.repo(repo_type, repo_id)
        self._require_read(repo)
        doc = self._json_body()
        if doc.get("operation") != "upload":
            raise HubError(400, "only the upload operation is supported")
        if "basic" not in doc.get("transfers", ["basic"]):
            raise HubError(400, "only the basic transfer is supported")
        objects = []
        for obj in doc.get("objects", []):
            item: dict[str, Any] = {"oid": obj["oid"], "size": int(obj["size"]), "authenticated": True}
            if not state.has_blob(obj["oid"]):
                href = f"{self.hub.url}/lfs-upload/{obj['oid']}?sig={self.hub.sign(obj['oid'])}"
                item["actions"] = {"upload": {"href": href}}
            objects.append(item)
        return self._send_json({"transfer": "basic", "objects": objects})

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> int:
        state = self.hub.state
        repo = state.repo(repo_type, repo_id)
        self._require_read(repo)
        commit = repo.resolve(revision)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = state.blob(entry.sha256)
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{entry.git_oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        rng = self.headers.get("Range")
        if rng and (m := re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())):
            start_s, end_s = m.groups()
            if start_s == "":
                start, end = max(0, len(data) - int(end_s)), len(data) - 1
            else:
                start, end = int(start_s), min(int(end_s) if end_s else len(data) - 1, len(data) - 1)
            if start >= len(data) and len(data) > 0:
                headers["Content-Range"] = f"bytes */{len(data)}"
                return self._send(416, b"", headers)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start : end + 1], headers)
        return self._send(200, data, headers)


def _tree(commit: Commit, folder: str, recursive: bool) -> list[dict[str, Any]]:
    prefix = folder + "/" if folder else ""
    if folder and not any(p.startswith(prefix) for p in commit.files):
        raise HubError(404, f"folder {folder} not found", "EntryNotFound")
    out: dict[str, dict[str, Any]] = {}
    for path, entry in sorted(commit.files.items()):
        if not path.startswith(prefix):
            continue
        rel = path[len(prefix) :].split("/")
        for depth in range(1, len(rel)):
            sub = prefix + "/".join(rel[:depth])
            if depth == 1 or recursive:
                out.setdefault(sub, _dir_info(commit, sub))
            if not recursive:
                break
        if len(rel) == 1 or recursive:
            out[path] = _file_info(path, entry)
    return list(out.values())


def _path_info(commit: Commit, path: str) -> dict[str, Any] | None:
    path = path.strip("/")
    if path in commit.files:
        return _file_info(path, commit.files[path])
    if any(p.startswith(path + "/") for p in commit.files):
        return _dir_info(commit, path)
    return None


def _file_info(path: str, entry: Entry) -> dict[str, Any]:
    info: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
    if entry.lfs:
        info["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(entry.pointer())}
    return info


def _dir_info(commit: Commit, path: str) -> dict[str, Any]:
    listing = "".join(f"{p}:{e.sha256}" for p, e in sorted(commit.files.items()) if p.startswith(path + "/"))
    return {"type": "directory", "oid": _sha1(listing.encode()), "size": 0, "path": path}


def _front_matter(text: str) -> Any:
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    return yaml.safe_load(m.group(1)) if m else None


def _git_sha1(data: bytes) -> str:
    return _sha1(b"blob %d\0" % len(data) + data)


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
