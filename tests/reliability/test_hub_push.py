"""`essa export --push-to-hub` with the real huggingface_hub client against FakeHub, a local HTTP server.

The CLI runs as a user runs it, in its own process, with the token in HF_TOKEN and HF_ENDPOINT
pointing at FakeHub. Checked: the repository is created (private) before the upload, the Hub
receives exactly the exported files, nothing pushed names a local path, the token is sent only
in the Authorization header and is never printed or written anywhere under the run or the
export, and a wrong token or an unreachable Hub fails with one line while the export stays.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "essa"))
sys.path.insert(0, str(HERE))
import fake_pool  # noqa: E402
from fake_hub import FakeHub  # noqa: E402

TOKEN = "hf_essaTestTokenThatMustNeverLeak0123"
ESSA = [sys.executable, "-c", "import sys; from essa.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return fake_pool.tiny_run(tmp_path_factory.mktemp("hub"), "search.generations=2", model_name="local-model")[0]


def _push(run: Path, out: Path, repo: str, endpoint: str, token: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(out.parent / "hf-home"),
    }
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run(
        [*ESSA, "export", str(run), "--out", str(out), "--push-to-hub", repo],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _everything_under(*folders: Path) -> bytes:
    return b"".join(p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file())


def test_push_sends_the_export_to_a_new_private_repository_and_never_the_token(run, tmp_path):
    out = tmp_path / "adapter"
    with FakeHub(TOKEN) as hub:
        proc = _push(run, out, "me/essa-adapter", hub.url, TOKEN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert hub.repos == {"me/essa-adapter": "private"}
    calls = [path for _, path, _, _ in hub.requests]
    assert calls[0] == "/api/repos/create" and calls[-1].startswith("/api/models/me/essa-adapter/commit/")
    local = {p.name: p.read_bytes() for p in out.iterdir()}
    assert hub.files["me/essa-adapter"] == local  # every exported file, byte for byte, nothing else
    assert {"adapter_model.safetensors", "adapter_config.json", "essa.json", "README.md"} <= set(local)

    pushed = b"".join(hub.files["me/essa-adapter"].values())
    for local_path in (str(tmp_path), str(run.parent), str(Path.home())):
        assert local_path.encode() not in pushed, local_path  # no local path reaches the Hub
    assert json.loads(local["adapter_config.json"])["base_model_name_or_path"] == "local-model"

    assert {headers.get("authorization") for _, _, headers, _ in hub.requests} == {f"Bearer {TOKEN}"}, [
        (path, headers.get("authorization")) for _, path, headers, _ in hub.requests
    ]
    assert TOKEN not in proc.stdout + proc.stderr
    assert TOKEN.encode() not in _everything_under(run, out)
    assert all(TOKEN.encode() not in body for _, _, _, body in hub.requests)  # only ever in the header


@pytest.mark.parametrize("case", ["wrong token", "hub unreachable"])
def test_a_failed_push_is_one_line_and_keeps_the_export(case, run, tmp_path):
    out = tmp_path / "adapter"
    with FakeHub(TOKEN) as hub:
        endpoint = hub.url
        if case == "wrong token":
            proc = _push(run, out, "me/essa-adapter", endpoint, "hf_notTheRightOne")
    if case == "hub unreachable":  # the server is shut: connections are refused
        proc = _push(run, out, "me/essa-adapter", endpoint, TOKEN)
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("essa: error: push to me/essa-adapter failed"), proc.stderr
    assert "HF_TOKEN" in err[0] and f"--out {out}" in err[0]  # the fix and the command to retry
    assert (out / "adapter_model.safetensors").is_file()  # the local export stays
    assert hub.files == {}
    assert TOKEN not in proc.stdout + proc.stderr
