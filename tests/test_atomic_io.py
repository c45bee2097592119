"""The one atomic writer: whole files or nothing, usual permissions, no temporary files left behind."""

import hashlib
import json
import os
import stat

import pytest

from condu_bench import atomic_io
from condu_bench.atomic_io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_writes_replace_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "a.json"  # missing parent folders are created
    atomic_write_json(path, {"b": 1, "when": object()}, default=lambda _: "x")
    assert json.loads(path.read_text()) == {"b": 1, "when": "x"} and path.read_text().endswith("\n")
    atomic_write_text(path, "héllo\r\n")
    assert path.read_bytes() == "héllo\r\n".encode()  # no newline translation
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert leftovers(path.parent) == []


def test_new_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640  # 0o666 & ~umask, not mkstemp's 0o600


def test_file_and_directory_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic_io.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    atomic_write_text(tmp_path / "f.txt", "x")
    assert any(s.endswith(".tmp") for s in synced), synced  # the data, before the rename
    assert str(tmp_path) in synced  # the rename


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"old": True})

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_io.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"new": True})
    monkeypatch.undo()
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_text('{"half')
            raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"old": True}
    assert leftovers(tmp_path) == []


def test_sha256_file(tmp_path):
    data = os.urandom(10_000)
    (tmp_path / "b").write_bytes(data)
    assert sha256_file(tmp_path / "b") == sha256_file(tmp_path / "b", chunk=7) == hashlib.sha256(data).hexdigest()


def test_every_result_file_goes_through_the_atomic_writer(tmp_path, monkeypatch):
    from condu_bench.experiment import write_outputs
    from condu_bench.training.runner import StreamResult

    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(atomic_io.os, "replace", lambda src, dst: (replaced.append(os.path.basename(dst)), real_replace(src, dst)))
    stream = StreamResult("s", ["a", "b"], ["a", "b"], [[50.0, 10.0], [40.0, 60.0]])
    record = {"scenario": "synthetic_mtil", "protocol": "mtil", "method": "finetune", "seed": 0, "transfer": 10.0,
              "avg": 40.0, "last": 50.0, "per_dataset": {}, "config_hash": "abc"}
    write_outputs(tmp_path, record, [stream], {"name": "run"})
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {"config.yaml", "accuracy_matrix.csv", "report.md", "accuracy_matrix.png", "metrics.json"}
    assert set(replaced) == written and replaced[-1] == "metrics.json"


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path):
    from condu_bench.atomic_io import atomic_directory

    entry = tmp_path / "cache" / "key"
    with pytest.raises(RuntimeError):
        with atomic_directory(entry, "meta.json") as staging:
            (staging / "data").write_text("half")
            raise RuntimeError("killed mid-way")
    assert not entry.exists() and list((tmp_path / "cache").iterdir()) == []
    with atomic_directory(entry, "meta.json") as staging:
        (staging / "meta.json").write_text("first")
    with atomic_directory(entry, "meta.json") as staging:  # a second writer finds the finished entry and drops its own
        (staging / "meta.json").write_text("second")
    assert (entry / "meta.json").read_text() == "first" and [p.name for p in entry.parent.iterdir()] == ["key"]
