"""What a run leaves for people: TensorBoard scalars, the reward curve, `essa status`, the model card,
and the Hub push (against FakeHubApi, a stand-in for huggingface_hub.HfApi).

The runs use the in-process FakePool (tests/essa/fake_pool.py): no engine, seconds per run.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from essa.cli import main
from essa.config import load_config
from essa.model.adapters import ForeignFolderError
from essa.report.export import export_best
from essa.run.coordinator import align

sys.path.insert(0, str(Path(__file__).parent))
import fake_pool
from fake_pool import FakePool, tiny_config, write_tiny_model


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return fake_pool.tiny_run(tmp_path_factory.mktemp("outputs"), "search.generations=6", "run.heldout_size=16")[0]


def _events(folder: Path) -> list:
    """Every scalar (tag, step, value) in a folder of TensorBoard event files (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    found = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            found += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return found


def test_tensorboard_holds_the_metrics_of_every_generation(finished_run):
    lines = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    scalars = {(tag, step): value for tag, step, value in _events(finished_run / "tensorboard")}
    for record in lines:
        step = record["generation"] + 1
        if "reward_mean" in record:
            assert scalars[("train/reward_mean", step)] == pytest.approx(record["reward_mean"], rel=1e-6)
            assert scalars[("search/sigma", step)] == pytest.approx(record["sigma"], rel=1e-6)
            assert scalars[("train/snr", step)] == pytest.approx(record["snr"], rel=1e-6)
            assert ("speed/tokens_per_s", step) in scalars and ("time/total_s", step) in scalars
        if "validation" in record:
            assert scalars[("validation/reward", step)] == pytest.approx(record["validation"], rel=1e-6)
    assert ("validation/base_model", 0) in scalars


def test_the_run_draws_its_reward_curve_and_essa_plot_compares_runs(finished_run, tmp_path, capsys):
    png = finished_run / "reward.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "two.png"
    assert main(["plot", str(finished_run), str(finished_run), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(out) in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "not an essa run directory" in capsys.readouterr().err
    assert main(["plot", str(finished_run), "--out", str(tmp_path / "x.jpg")]) == 2


def test_status_reads_a_finished_run(finished_run, capsys):
    from essa.report.status import run_status

    status = run_status(finished_run)
    assert (status["generation"], status["generations"], status["held_by"]) == (6, 6, None)
    best = max(
        json.loads(line)["validation"]
        for line in (finished_run / "metrics.jsonl").read_text().splitlines()
        if "validation" in json.loads(line)
    )
    assert status["validation_best"] == best and status["exported"] and status["last_checkpoint"] == "gen_000006"
    assert main(["status", str(finished_run)]) == 0
    text = capsys.readouterr().out
    assert "6 of 6" in text and "ETA" in text and "done" in text


def test_status_names_the_process_that_holds_a_run(finished_run):
    from essa.report.status import run_status
    from essa.run.run_dir import hold_run

    with hold_run(finished_run):
        assert "pid" in run_status(finished_run)["held_by"]
    assert run_status(finished_run)["held_by"] is None


def test_the_export_carries_a_model_card_from_the_run(finished_run, tmp_path):
    out = export_best(finished_run, tmp_path / "export")
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and "library_name: peft" in card and "- gsm8k" in card
    heldout = json.loads((finished_run / "heldout.json").read_text())
    assert f"{heldout['diff']:+.4f}" in card and "λ = 8" in card and "![reward" in card
    assert f"The base model on the same prompts: {heldout['from_base']['before']:.4f}" in card
    assert (out / "reward.png").read_bytes() == (finished_run / "reward.png").read_bytes()
    from huggingface_hub import ModelCard  # the Hub's own reader: the header and its model-index

    data = ModelCard.load(out / "README.md").data
    assert data.library_name == "peft" and data.pipeline_tag == "text-generation" and data.datasets == ["openai/gsm8k"]
    (result,) = data.eval_results
    assert (result.dataset_split, result.metric_type) == (heldout["split"], heldout["metric"])
    assert result.metric_value == pytest.approx(heldout["after"]) and result.dataset_type == "openai/gsm8k"
    recorded = json.loads((out / "essa.json").read_text())["files"]
    assert set(recorded) == {"README.md", "reward.png"}
    # an unedited card is essa's to replace; an edited one is the user's and stops the export
    export_best(finished_run, out)
    (out / "README.md").write_text(card + "\nmy notes\n")
    with pytest.raises(ForeignFolderError, match="README.md, changed since essa wrote it"):
        export_best(finished_run, out)
    assert (out / "README.md").read_text().endswith("my notes\n")


class FakeHubApi:
    """Stands in for huggingface_hub.HfApi: records calls, fails where told."""

    def __init__(self, fail_on: str | None = None):
        self.calls, self.fail_on = [], fail_on

    def create_repo(self, repo_id, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        if self.fail_on == "create_repo":
            raise OSError("We couldn't connect to 'https://huggingface.co'\nmore detail")
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, commit_message=None):
        self.calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))


def test_push_creates_the_repository_then_uploads_and_fails_clearly(finished_run, tmp_path):
    from essa.report.hub import push_to_hub

    out = export_best(finished_run, tmp_path / "export")
    api = FakeHubApi()
    assert push_to_hub(out, "me/adapter", api=api) == "https://huggingface.co/me/adapter"
    assert api.calls[0] == ("create_repo", "me/adapter", True, True)
    assert api.calls[1][0] == "upload_folder" and "adapter_model.safetensors" in api.calls[1][2]
    with pytest.raises(RuntimeError, match=r"push to me/adapter failed \(OSError: We couldn't connect.*saved at"):
        push_to_hub(out, "me/adapter", api=FakeHubApi(fail_on="create_repo"))
    assert (out / "adapter_model.safetensors").is_file()  # the local export stays
    for bad in ("no-slash", "a/b/c", "me/two words", "me/a--b", "me/" + "x" * 97):  # the Hub's own rules
        with pytest.raises(ValueError, match="USER_OR_ORG/NAME"):
            push_to_hub(out, bad, api=api)
    assert len(api.calls) == 2  # refused before any call
    provenance = (out / "essa.json").read_text() + (out / "README.md").read_text()
    assert str(tmp_path) not in provenance  # nothing local goes to the Hub


def test_the_forgetting_check_scores_another_task_after_the_run(tmp_path, capsys):
    from essa.cli import print_summary

    model = write_tiny_model(tmp_path / "model")
    seen = []

    def pools(cfg, basis):  # the run's pool, then the forgetting check's
        seen.append((cfg.task.name, cfg.generation.max_new_tokens))
        return FakePool(cfg, basis)

    cfg = tiny_config(model, "search.generations=2", "run.forgetting_task=math500", "run.forgetting_size=20")
    run = tmp_path / "run"
    adapter = align(cfg, run, resume=False, pool_factory=pools)
    math500 = load_config("math500")
    assert seen == [("gsm8k", cfg.generation.max_new_tokens), ("math500", math500.generation.max_new_tokens)]
    check = json.loads((run / "forgetting.json").read_text())
    assert (
        check["task"] == "math500"
        and check["split"] == "test"
        and check["prompts"] == 20
        and check["from_base"]["after"] == check["after"]
    )
    assert "forgetting check, math500 test" in capsys.readouterr().out
    print_summary(run, adapter)
    assert "forgetting check, math500 test (20), warm start -> best" in capsys.readouterr().out
    assert "Forgetting check on `math500`: the first 20 prompts" in (adapter / "README.md").read_text()


def test_an_unknown_forgetting_task_is_refused_with_the_choices():
    from essa.config import ConfigError

    with pytest.raises(
        ConfigError, match="run.forgetting_task='mmlu': choose one of gsm8k, ifeval, math500, countdown"
    ):
        load_config("gsm8k", overrides=["run.forgetting_task=mmlu"])


def test_a_run_stopped_in_its_forgetting_check_resumes_with_only_that_tasks_engines(tmp_path):
    model = write_tiny_model(tmp_path / "model")
    cfg = tiny_config(model, "search.generations=2", "run.forgetting_task=math500", "run.forgetting_size=20")
    run, started = tmp_path / "run", []

    def stops_in_the_check(cfg, basis):
        if cfg.task.name == "math500":
            raise KeyboardInterrupt  # stopped while the forgetting check's engines start
        return FakePool(cfg, basis)

    with pytest.raises(KeyboardInterrupt):
        align(cfg, run, resume=False, pool_factory=stops_in_the_check)
    assert not (run / "forgetting.json").exists()
    align(None, run, resume=True, pool_factory=lambda c, b: started.append(c.task.name) or FakePool(c, b))
    assert started == ["math500"] and json.loads((run / "forgetting.json").read_text())["prompts"] == 20
