"""The distribution as a user installs it: a wheel built from this tree, installed apart from it."""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Without build isolation: the backend pyproject asks for is in the dev extra, and no download happens.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        check=True,
        cwd=out,
    )
    (built,) = out.glob("essa_align-*.whl")
    return built


def test_the_wheel_carries_licence_notice_typing_marker_and_configs(wheel) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert {f"{dist_info}/licenses/LICENSE", f"{dist_info}/licenses/NOTICE", "essa/py.typed"} <= names
    assert {f"essa/configs/{task}.yaml" for task in ("gsm8k", "ifeval", "math500", "countdown")} <= names
    assert {"essa/rewards/countdown.py", "essa/search/es.py", "essa/workers/actor.py"} <= names
    assert not any(n.startswith(("tests/", "scripts/", "runs/")) for n in names)


def test_the_metadata_declares_the_spdx_licence_and_one_version(wheel) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    text = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    metadata = email.parser.Parser().parsestr(text)
    assert metadata["Name"] == "essa-align" and metadata["License-Expression"] == "Apache-2.0"
    assert sorted(metadata.get_all("License-File")) == ["LICENSE", "NOTICE"]
    assert f'version = "{metadata["Version"]}"' in (REPO / "pyproject.toml").read_text()


def test_the_installed_wheel_runs_the_command_away_from_the_source_tree(wheel, tmp_path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = "import essa, essa.cli; print(essa.__file__); print(essa.__version__); essa.cli.main(['--help'])"
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    where, version, *help_text = done.stdout.splitlines()
    assert Path(where).is_relative_to(target)  # the installed copy, not the source tree
    assert (
        version
        == email.parser.Parser().parsestr(
            zipfile.ZipFile(wheel).read(f"essa_align-{version}.dist-info/METADATA").decode()
        )["Version"]
    )
    assert any("align" in line for line in help_text)
