"""FakeHub: a local HTTP server that answers the Hugging Face Hub API calls of a push, for tests.

It serves what ``HfApi.create_repo`` and ``HfApi.upload_folder`` (huggingface_hub 2.4) send, so the
real client runs against it (``HF_ENDPOINT`` points there): ``POST /api/repos/create``,
``POST /api/models/{repo}/preupload/{rev}`` (every file is told "regular", so file contents come
inline in the commit, no LFS or Xet transfer) and ``POST /api/models/{repo}/commit/{rev}`` (NDJSON:
a header line, then one base64 file per line), and ``POST /api/validate-yaml``, which the client
calls for a README.md: its front matter must be a YAML mapping, as the Hub requires. Requests without ``Authorization: Bearer TOKEN``
get 401, as the Hub answers a missing or wrong token. What was received is kept: ``repos``
(repo id -> visibility), ``files`` (repo id -> {path: bytes}) and every request's headers (names in lower case).
Not a test itself.
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


class FakeHub:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, str] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, code: int, obj: dict) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                hub.requests.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, b""))
                self._reply(404, {"error": f"FakeHub does not serve GET {self.path}"})

            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hub.requests.append(("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, data))
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                self._reply(*hub.answer(self.path, data))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path: str, data: bytes) -> tuple[int, dict]:
        if path == "/api/validate-yaml":
            return self.validate_card(json.loads(data)["content"])
        if path == "/api/repos/create":
            body = json.loads(data)
            repo = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            self.repos[repo] = body.get("visibility", "private" if body.get("private") else "public")
            return 200, {"url": f"{self.url}/{repo}"}
        parts = path.split("/")  # /api/models/OWNER/NAME/{preupload|commit}/REV
        if len(parts) == 7 and parts[1:3] == ["api", "models"]:
            repo = f"{parts[3]}/{parts[4]}"
            if repo not in self.repos:
                return 404, {"error": f"Repository Not Found: {repo}"}
            if parts[5] == "preupload":
                files = json.loads(data)["files"]
                return 200, {
                    "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                }
            if parts[5] == "commit":
                received = self.files.setdefault(repo, {})
                for line in data.decode().splitlines():
                    entry = json.loads(line)
                    if entry["key"] == "file":
                        value = entry["value"]
                        assert value["encoding"] == "base64", value
                        received[value["path"]] = base64.b64decode(value["content"])
                return 200, {"commitUrl": f"{self.url}/{repo}/commit/{'0' * 40}", "commitOid": "0" * 40}
        return 404, {"error": f"FakeHub does not serve POST {path}"}

    @staticmethod
    def validate_card(card: str) -> tuple[int, dict]:
        if not card.startswith("---\n") or "\n---\n" not in card[3:]:
            return 400, {"errors": [{"message": "README.md has no YAML front matter"}]}
        try:
            metadata = yaml.safe_load(card[4 : card.index("\n---\n", 3)])
        except yaml.YAMLError as exc:
            return 400, {"errors": [{"message": f"invalid YAML: {exc}"}]}
        if not isinstance(metadata, dict):
            return 400, {"errors": [{"message": "the metadata must be a YAML mapping"}]}
        return 200, {"errors": [], "warnings": []}

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
