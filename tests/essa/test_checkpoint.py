"""Tests for essa.run.checkpoint (exact resume, atomicity, corrupt files) and essa.run.sampler (epochs, state)."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest

from essa.run.checkpoint import BestPoint, Checkpoint, checkpoint_root, load_latest, save_checkpoint
from essa.run.sampler import PromptSampler
from essa.search import make_strategy


def reward(X):
    return -np.sum((X - 0.3) ** 2, axis=1)


def run_strategy(generations, name="cma_sep", dim=50, popsize=4):
    es = make_strategy(name, dim, popsize, 0.5, 0)
    for _ in range(generations):
        X = es.ask()
        es.tell(X, reward(X))
    return es


def make_checkpoint(generation=2, name="cma_sep", dim=50, sampler=None):
    es = run_strategy(generation, name, dim)
    sampler = sampler or PromptSampler(37, 5, seed=3)
    return (
        es,
        sampler,
        Checkpoint(
            generation=generation,
            strategy=es.state_dict(),
            sampler=sampler.state_dict(),
            best=BestPoint(es.mean.copy(), generation, 0.25),
        ),
    )


@pytest.mark.parametrize(("name", "dim"), [("cma_sep", 50), ("cma_full", 6)])
def test_round_trip_resumes_bit_identically(tmp_path, name, dim):
    sampler = PromptSampler(37, 5, seed=3)
    for _ in range(4):
        sampler.next()
    es, _, ckpt = make_checkpoint(2, name, dim, sampler)
    final = save_checkpoint(tmp_path, ckpt)
    assert final == checkpoint_root(tmp_path) / "gen_000002"

    loaded = load_latest(tmp_path)
    assert loaded.generation == 2
    assert loaded.best.record() == {"generation": 2, "validation": 0.25, "scores": None}
    np.testing.assert_array_equal(loaded.best.z, ckpt.best.z)
    assert set(loaded.strategy) == set(ckpt.strategy)

    restored = make_strategy(name, dim, 4, 0.5, 0)
    restored.load_state_dict(loaded.strategy)
    for _ in range(3):  # next asks, and the tells in between, match the uninterrupted run exactly
        X, Y = es.ask(), restored.ask()
        assert np.array_equal(X, Y)
        es.tell(X, reward(X))
        restored.tell(Y, reward(Y))
    assert np.array_equal(es.mean, restored.mean) and es.sigma == restored.sigma

    resumed = PromptSampler(37, 5, seed=3)
    resumed.load_state_dict(loaded.sampler)
    assert [resumed.next() for _ in range(10)] == [sampler.next() for _ in range(10)]


def test_round_trip_with_a_pending_population(tmp_path):
    es = run_strategy(1)
    pending = es.ask()  # asked, not yet told: pending is an array in the state
    ckpt = Checkpoint(1, es.state_dict(), PromptSampler(5, 2, 0).state_dict(), BestPoint(np.zeros(50)))
    save_checkpoint(tmp_path, ckpt)
    restored = make_strategy("cma_sep", 50, 4, 0.5, 0)
    restored.load_state_dict(load_latest(tmp_path).strategy)
    es.tell(pending, reward(pending))
    restored.tell(pending, reward(pending))
    assert np.array_equal(es.ask(), restored.ask())


def test_latest_names_the_newest_and_older_ones_stay(tmp_path):
    for generation in (2, 5, 10):
        save_checkpoint(tmp_path, make_checkpoint(generation)[2])
    root = checkpoint_root(tmp_path)
    assert (root / "latest").read_text().strip() == "gen_000010"
    assert sorted(p.name for p in root.iterdir()) == ["gen_000002", "gen_000005", "gen_000010", "latest"]
    assert load_latest(tmp_path).generation == 10


def test_a_best_point_in_the_older_form_still_reads(tmp_path):
    """Checkpoints written before the per-prompt rewards were kept hold {"generation", "validation"}
    only, and before the warm start was validated a null validation."""
    final = save_checkpoint(tmp_path, make_checkpoint(2)[2])
    state = json.loads((final / "state.json").read_text())
    for old, expected in (
        ({"generation": 2, "validation": 0.5}, (2, 0.5, None)),
        ({"generation": 0, "validation": None}, (0, None, None)),
        ({"generation": 1, "validation": 0.5, "scores": [1, 0]}, (1, 0.5, [1.0, 0.0])),
    ):
        (final / "state.json").write_text(json.dumps({**state, "best": old}))
        best = load_latest(tmp_path).best
        assert (best.generation, best.validation, best.prompt_rewards) == expected
    (final / "state.json").write_text(json.dumps({**state, "best": [0.5]}))
    with pytest.raises(ValueError, match="corrupt"):
        load_latest(tmp_path)


def test_saving_the_same_generation_again_replaces_it(tmp_path):
    save_checkpoint(tmp_path, make_checkpoint(3)[2])
    _, _, again = make_checkpoint(3)
    again.best = BestPoint(again.best.z, 3, 0.75)
    save_checkpoint(tmp_path, again)
    assert load_latest(tmp_path).best.validation == 0.75


@pytest.mark.parametrize("setup", ["missing-run-dir", "empty-run-dir", "empty-checkpoints-dir"])
def test_no_checkpoint_gives_none(tmp_path, setup):
    run_dir = tmp_path / "run"
    if setup != "missing-run-dir":
        run_dir.mkdir()
    if setup == "empty-checkpoints-dir":
        checkpoint_root(run_dir).mkdir()
    assert load_latest(run_dir) is None


def test_leftover_tmp_dir_from_a_crash_is_ignored(tmp_path):
    save_checkpoint(tmp_path, make_checkpoint(2)[2])
    crashed = checkpoint_root(tmp_path) / ".gen_000003.tmp"
    crashed.mkdir()
    (crashed / "arrays.npz").write_bytes(b"half-written")
    loaded = load_latest(tmp_path)
    assert loaded.generation == 2
    # ...and the next save of that generation cleans it up.
    save_checkpoint(tmp_path, make_checkpoint(3)[2])
    assert not crashed.exists()
    assert load_latest(tmp_path).generation == 3


@pytest.fixture
def saved(tmp_path):
    return tmp_path, save_checkpoint(tmp_path, make_checkpoint(2)[2])


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("state.json", b"{not json"),
        ("state.json", b"\xff\xfe\x00garbage"),
        ("arrays.npz", b"this is not an npz file at all"),
    ],
    ids=["state-json-syntax", "state-json-binary", "npz-garbage"],
)
def test_corrupt_files_raise_value_error_naming_the_directory(saved, filename, content):
    run_dir, directory = saved
    (directory / filename).write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_latest(run_dir)
    assert str(directory) in str(info.value)


@pytest.mark.parametrize("cut", [0.5, 0.0], ids=["truncated", "empty"])
def test_truncated_npz_raises_value_error_naming_the_directory(saved, cut):
    run_dir, directory = saved
    data = (directory / "arrays.npz").read_bytes()
    (directory / "arrays.npz").write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ValueError) as info:
        load_latest(run_dir)
    assert str(directory) in str(info.value)


def test_object_array_in_npz_is_refused(saved):
    run_dir, directory = saved
    buffer = io.BytesIO()
    np.savez(buffer, best_z=np.array([{"evil": 1}, None], dtype=object))
    (directory / "arrays.npz").write_bytes(buffer.getvalue())
    # with a matching checksum, so that np.load(allow_pickle=False) is what refuses it
    state = json.loads((directory / "state.json").read_text())
    state["arrays_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (directory / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="corrupt") as info:
        load_latest(run_dir)
    assert str(directory) in str(info.value)
    assert "pickle" in str(info.value).lower()


def test_wrong_format_version_is_refused(saved):
    run_dir, directory = saved
    state = json.loads((directory / "state.json").read_text())
    state["format"] = 99
    (directory / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="format 99"):
        load_latest(run_dir)


def test_latest_naming_a_missing_directory_with_nothing_to_fall_back_on_is_an_error(saved):
    import shutil

    run_dir, directory = saved
    shutil.rmtree(directory)
    (checkpoint_root(run_dir) / "latest").write_text("gen_000999\n")
    with pytest.raises(ValueError, match="gen_000999"):
        load_latest(run_dir)


# ---- PromptSampler --------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "batch_size"), [(10, 3), (10, 10), (7, 4), (5, 12), (1, 3), (100, 16)])
def test_batches_cover_every_index_once_per_epoch(size, batch_size):
    sampler = PromptSampler(size, batch_size, seed=0)
    batches = [sampler.next() for _ in range(3 * size)]  # 3 · batch_size epochs' worth
    assert all(len(b) == batch_size for b in batches)
    flat = [i for b in batches for i in b]
    epochs = len(flat) // size
    assert epochs >= 3
    for e in range(epochs):
        assert sorted(flat[e * size : (e + 1) * size]) == list(range(size)), f"epoch {e}"


def test_epochs_are_different_permutations():
    sampler = PromptSampler(50, 50, seed=0)
    first, second = sampler.next(), sampler.next()
    assert sorted(first) == sorted(second) and first != second


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_same_seed_same_sequence(seed):
    one, two = PromptSampler(40, 6, seed), PromptSampler(40, 6, seed)
    assert [one.next() for _ in range(20)] == [two.next() for _ in range(20)]


def test_different_seeds_differ():
    sequences = {tuple(PromptSampler(40, 8, seed).next()) for seed in range(5)}
    assert len(sequences) == 5


@pytest.mark.parametrize("steps", [0, 3, 7, 8])  # 7 · 6 = 42 crosses the 40-prompt epoch mid-batch
def test_state_round_trip_through_json(steps):
    sampler = PromptSampler(40, 6, seed=2)
    for _ in range(steps):
        sampler.next()
    state = json.loads(json.dumps(sampler.state_dict()))
    resumed = PromptSampler(40, 6, seed=2)
    resumed.load_state_dict(state)
    assert [resumed.next() for _ in range(15)] == [sampler.next() for _ in range(15)]


@pytest.mark.parametrize(("size", "seed"), [(41, 2), (40, 3)])
def test_load_state_for_other_data_or_seed_names_both(size, seed):
    state = PromptSampler(40, 6, seed=2).state_dict()
    other = PromptSampler(size, 6, seed=seed)
    with pytest.raises(ValueError) as info:
        other.load_state_dict(state)
    message = str(info.value)
    assert "40 prompts / seed 2" in message
    assert f"{size} / {seed}" in message


def test_empty_split_is_refused():
    with pytest.raises(ValueError, match="empty"):
        PromptSampler(0, 4, seed=0)


def test_a_bit_flip_in_the_arrays_is_caught_by_the_checksum(saved):
    run_dir, directory = saved
    data = bytearray((directory / "arrays.npz").read_bytes())
    # Flip one bit inside the stored array data (past the zip headers): np.load alone reads it happily.
    data[len(data) // 2] ^= 0x01
    (directory / "arrays.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum|corrupt") as info:
        load_latest(run_dir)
    assert str(directory) in str(info.value)


@pytest.mark.parametrize("damage", ["truncated-npz", "missing-dir", "garbage-pointer", "state-without-keys"])
def test_a_damaged_latest_falls_back_to_the_previous_good_one_with_a_warning(tmp_path, capsys, damage):
    for generation in (2, 4, 6):
        save_checkpoint(tmp_path, make_checkpoint(generation)[2])
    root = checkpoint_root(tmp_path)
    newest = root / "gen_000006"
    if damage == "truncated-npz":
        data = (newest / "arrays.npz").read_bytes()
        (newest / "arrays.npz").write_bytes(data[: len(data) // 3])
    elif damage == "missing-dir":
        import shutil

        shutil.rmtree(newest)
    elif damage == "garbage-pointer":
        (root / "latest").write_bytes(b"\x00\xffnot a name")
    else:
        (newest / "state.json").write_text(json.dumps({"format": 1}))
    loaded = load_latest(tmp_path)
    # a garbage pointer names nothing, so the newest readable checkpoint is taken
    assert loaded.generation == (6 if damage == "garbage-pointer" else 4)
    warning = capsys.readouterr().err
    assert "warning" in warning and "previous good checkpoint" in warning
    if damage != "garbage-pointer":
        assert "gen_000006" in warning and "gen_000004" in warning


def test_when_no_checkpoint_reads_the_error_names_the_first_problem(tmp_path):
    for generation in (2, 4):
        save_checkpoint(tmp_path, make_checkpoint(generation)[2])
    for directory in checkpoint_root(tmp_path).glob("gen_*"):
        (directory / "arrays.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="gen_000004.*no earlier checkpoint"):
        load_latest(tmp_path)


def test_keep_prunes_all_but_the_newest_checkpoints(tmp_path):
    for generation in (1, 2, 3, 4, 5):
        save_checkpoint(tmp_path, make_checkpoint(generation)[2], keep=2)
    root = checkpoint_root(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["gen_000004", "gen_000005", "latest"]
    assert load_latest(tmp_path).generation == 5
    save_checkpoint(tmp_path, make_checkpoint(6)[2], keep=0)  # 0 keeps everything
    assert sorted(p.name for p in root.glob("gen_*")) == ["gen_000004", "gen_000005", "gen_000006"]
