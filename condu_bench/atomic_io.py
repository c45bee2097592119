"""Crash-safe file writes and file hashing, shared by every module that writes results, caches or checkpoints.

A write goes to a temporary file in the destination's directory, is flushed and fsynced, renamed over the
destination with :func:`os.replace` (atomic on POSIX and Windows), and the directory is fsynced so the rename
itself survives a power loss. A reader therefore sees the old file or the new one, never a torn mix; the
temporary file is removed when anything fails. New files get the usual ``0o666 & ~umask`` permissions
(:func:`tempfile.mkstemp` alone would leave them ``0o600``).

Importing this module imports nothing outside the standard library (and :mod:`condu_bench.errors`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from condu_bench.errors import UserError

__all__ = ["atomic_path", "atomic_directory", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "sha256_file", "FileWriteError"]


class FileWriteError(UserError, OSError):
    """A write that failed (full disk, no permission, ...): names the file; its previous version is untouched."""

    def __init__(self, path: Path, cause: OSError):
        super().__init__(f"cannot write {path}: {cause.strerror or cause} (errno {cause.errno}); its previous version, "
                         "if any, is unchanged. Free space or fix the permissions of that folder, then run the same "
                         "command again to continue")
        self.errno, self.filename = cause.errno, str(path)

    def __str__(self) -> str:  # OSError's own would print only "[Errno N] None: path"
        return self.args[0]


def _default_mode() -> int:
    umask = os.umask(0)  # the only portable way to read the umask is to set it and put it back
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return  # directories cannot be opened (nor need fsync) on Windows
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` for a writer that wants a file name (``savefig``, ``save_file``).

    When the block ends normally the temporary file is fsynced and renamed over ``path``; when it raises,
    the temporary file is removed and ``path`` is left as it was::

        with atomic_path(out / "weights.safetensors") as tmp:
            safetensors.torch.save_file(tensors, str(tmp))
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise FileWriteError(path, exc) from exc
    tmp = Path(name)
    try:
        yield tmp
        _fsync_path(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, FileWriteError):
            raise FileWriteError(path, exc) from exc
        raise
    _fsync_dir(path.parent)


@contextmanager
def atomic_directory(path: str | os.PathLike, complete: str) -> Iterator[Path]:
    """A private staging directory next to ``path``, renamed to ``path`` when the block ends normally: a cache entry
    that appears whole or not at all. When another writer got there first (``path/complete`` exists), its entry is
    kept and this one dropped; the staging directory never outlives the block::

        with atomic_directory(root / key, "meta.json") as staging:
            ...  # write the entry's files, meta.json last
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        try:
            os.rename(staging, path)  # atomic; fails when another process got there first
        except OSError:
            if not (path / complete).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``text`` atomically (no newline translation); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, **dumps_kwargs: Any) -> Path:
    """Replace ``path`` with ``obj`` as JSON (``json.dumps`` keyword arguments pass through) plus a final newline."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **dumps_kwargs) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-sized blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
