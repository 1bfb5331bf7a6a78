"""A stand-in for the Hugging Face hub on loopback: serves repos from local folders the way the hub's
``/{repo}/resolve/{revision}/{file}`` endpoint does (HEAD and GET, X-Repo-Commit, ETag, sizes, 404s with
the hub's X-Error-Code), so huggingface_hub's own download and cache code runs unchanged, without a network.
"""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


class FakeHub:
    """repos: repo id -> folder of its files; gated: repo ids that answer 403 GatedRepo.
    `requests` records (method, repo, file) of every request, in order."""

    def __init__(self, repos: dict[str, Path], gated: tuple[str, ...] = ()) -> None:
        self.repos = {repo: Path(folder) for repo, folder in repos.items()}
        self.gated = set(gated)
        self.requests: list[tuple[str, str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

            def log_message(self, *args) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @staticmethod
    def commit(repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def files_requested(self, method: str = "GET") -> list[str]:
        return [file for m, _, file in self.requests if m == method]

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        parts = unquote(handler.path.split("?")[0]).lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(handler, 404, "RepoNotFound", "")
        repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
        self.requests.append((handler.command, repo, filename))
        if repo in self.gated:
            return self._error(handler, 403, "GatedRepo", repo)
        if repo not in self.repos:
            return self._error(handler, 404, "RepoNotFound", "")
        path = self.repos[repo] / filename
        if not path.is_file():
            return self._error(handler, 404, "EntryNotFound", repo)
        data = path.read_bytes()
        handler.send_response(200)
        handler.send_header("X-Repo-Commit", self.commit(repo))
        handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def _error(self, handler: BaseHTTPRequestHandler, status: int, code: str, repo: str) -> None:
        message = f"{code}".encode()
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", code)
        if repo:
            handler.send_header("X-Repo-Commit", self.commit(repo))
        handler.send_header("Content-Length", str(len(message)))
        handler.end_headers()
        if handler.command == "GET":
            handler.wfile.write(message)
