"""Checkpoints are consistent pairs: a crash between the two writes keeps the old pair, a changed state file is refused."""

import json

import pytest
import torch

from condu_bench import run_store
from condu_bench.run_store import CHECKPOINT, CheckpointError


class Crash(Exception):
    pass


def save(directory, step):
    run_store.save_progress(directory, {"config_hash": "h", "step": step}, {"w": torch.full((4,), float(step))})


def state_files(directory):
    return sorted(p.name for p in (directory / CHECKPOINT).glob("state*.safetensors"))


def load(directory):
    progress = run_store.read_progress(directory)
    return progress["step"], run_store.load_progress_tensors(directory, progress)["w"]


def test_each_save_writes_a_new_file_named_and_hashed_in_progress(tmp_path):
    save(tmp_path, 1)
    first = state_files(tmp_path)
    save(tmp_path, 2)
    (second,) = state_files(tmp_path)  # the older file is gone once the new record points elsewhere
    assert first != [second] and second.startswith("state-0002-")
    record = json.loads((tmp_path / CHECKPOINT / "progress.json").read_text())
    assert record["state_file"] == second and len(record["state_sha256"]) == 64
    step, w = load(tmp_path)
    assert step == 2 and torch.equal(w, torch.full((4,), 2.0))


def test_a_crash_between_tensors_and_progress_resumes_from_the_old_pair(tmp_path, monkeypatch):
    save(tmp_path, 1)

    def crash(path, *args, **kwargs):
        raise Crash(path)

    monkeypatch.setattr(run_store, "atomic_write_json", crash)  # dies after the new tensors are on disk
    with pytest.raises(Crash):
        save(tmp_path, 2)
    monkeypatch.undo()
    assert len(state_files(tmp_path)) == 2  # the new tensors were written ...
    step, w = load(tmp_path)  # ... but the record still names the old ones, which are intact
    assert step == 1 and torch.equal(w, torch.full((4,), 1.0))
    assert run_store.prepare(tmp_path, "h", force=False) == "resume"
    save(tmp_path, 3)  # the next save cleans up what the crash left
    assert len(state_files(tmp_path)) == 1 and load(tmp_path)[0] == 3


def test_a_changed_state_file_is_refused_naming_it(tmp_path):
    save(tmp_path, 1)
    (name,) = state_files(tmp_path)
    path = tmp_path / CHECKPOINT / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in a tensor: safetensors alone would load it without complaint
    path.write_bytes(bytes(data))
    for attempt in (lambda: load(tmp_path), lambda: run_store.prepare(tmp_path, "h", force=False)):
        with pytest.raises(CheckpointError, match=rf"inconsistent: the state file .*{name} has SHA-256 .*--force"):
            attempt()
    assert run_store.prepare(tmp_path, "h", force=True) == "fresh"  # --force starts over
    assert not (tmp_path / CHECKPOINT).exists()


def test_a_missing_state_file_or_old_record_is_refused(tmp_path):
    save(tmp_path, 1)
    (name,) = state_files(tmp_path)
    (tmp_path / CHECKPOINT / name).unlink()
    with pytest.raises(CheckpointError, match=rf"{name} named in progress.json is missing"):
        run_store.prepare(tmp_path, "h", force=False)
    (tmp_path / CHECKPOINT / "progress.json").write_text(json.dumps({"config_hash": "h", "results": []}))
    with pytest.raises(CheckpointError, match="names no state file"):
        run_store.prepare(tmp_path, "h", force=False)
    (tmp_path / CHECKPOINT / "progress.json").write_text('{"config_hash": "h", "resu')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        run_store.prepare(tmp_path, "h", force=False)
    save(tmp_path, 1)
    (tmp_path / CHECKPOINT / state_files(tmp_path)[0]).unlink()
    assert run_store.prepare(tmp_path, "other config", force=False) == "fresh"  # another config's checkpoint is dropped
    assert not (tmp_path / CHECKPOINT).exists()
