"""One process at a time per run directory: a lock file created with ``O_EXCL``, holding who owns it.

``<run dir>/.lock`` is created atomically (``O_CREAT | O_EXCL`` is atomic on local file systems and on NFS v3+)
and holds the owner's pid, host, start time and a random token; a thread refreshes its mtime every
``HEARTBEAT_S`` seconds while the lock is held. A lock left by a process that died without releasing it (SIGKILL,
power loss, a preempted node) is stale and is taken over:

- on the owner's own host when that pid no longer runs, or runs a process started after the lock (a reused pid);
- from any host when its heartbeat is older than ``STALE_AFTER_S`` (the owner's host cannot be asked).

Taking over a stale lock is itself guarded by ``.lock.break`` (also ``O_EXCL``), and the lock is removed only if
it still holds the token that was judged stale, so two processes breaking one stale lock never both win.
Locks are re-entrant within a process (the sweep worker locks a run, then ``run_experiment`` locks it again).

Only the standard library is imported.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

from condu_bench.errors import UserError

LOCK_NAME = ".lock"
HEARTBEAT_S = 20.0
STALE_AFTER_S = 120.0
_BREAK_GUARD_STALE_S = 30.0  # the guard is held for microseconds; an older one was left by a crash
_WRITING_GRACE_S = 10.0  # an empty lock file younger than this is being written by its owner

_held: dict[Path, "RunLock"] = {}
_held_guard = threading.Lock()
_heartbeat: threading.Thread | None = None


class RunBusy(UserError):
    """The run directory is locked by a live process (this one is not allowed to run it now)."""

    def __init__(self, directory: Path, owner: dict[str, Any] | None):
        self.directory, self.owner = directory, owner or {}
        who = (f"pid {self.owner.get('pid')} on host {self.owner.get('host')} since {self.owner.get('started_at')}"
               if owner else "a process that is still writing the lock file")
        super().__init__(f"{directory} is being run by {who} (lock file {directory / LOCK_NAME}); "
                         "wait for it to finish, or stop that process")


def _this_host() -> str:
    return socket.gethostname()


def _process_start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch) on Linux, else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def stale_reason(owner: dict[str, Any] | None, age_s: float) -> str | None:
    """Why a lock with this content and heartbeat age may be taken over, or None while its owner may be alive."""
    if not owner:
        return None if age_s < _WRITING_GRACE_S else f"the lock file is empty and {age_s:.0f} s old"
    if owner.get("host") == _this_host():
        pid = int(owner.get("pid", -1))
        if not _pid_alive(pid):
            return f"its owner pid {pid} on this host is dead"
        started = _process_start_time(pid)
        if started is not None and started > float(owner.get("started", 0)) + 1.0:
            return f"pid {pid} now belongs to a process started after the lock was taken"
        return None
    if age_s > STALE_AFTER_S:
        return f"its heartbeat is {age_s:.0f} s old (owner host {owner.get('host')})"
    return None


def _read_owner(path: Path) -> tuple[dict[str, Any] | None, float]:
    """The lock's content (None while it is empty or torn) and the seconds since its last heartbeat."""
    stat = path.stat()
    try:
        owner = json.loads(path.read_text() or "null")
    except ValueError:
        owner = None
    return (owner if isinstance(owner, dict) else None), time.time() - stat.st_mtime


def _create_exclusive(path: Path, content: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except (FileExistsError, FileNotFoundError):
        return False
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _beat() -> None:
    while True:
        time.sleep(HEARTBEAT_S)
        with _held_guard:
            paths = [lock.path for lock in _held.values()]
        for path in paths:
            try:
                os.utime(path)
            except OSError:
                pass  # removed under us: the owner notices nothing, the next acquirer judges by content


class RunLock:
    """``with RunLock(directory):`` holds ``directory/.lock`` or raises :class:`RunBusy`."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.token = secrets.token_hex(8)
        self._depth = 0

    def acquire(self) -> RunLock:
        missing = [d for d in (self.directory, *self.directory.parents) if not d.exists()]
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        with _held_guard:
            if key in _held:  # re-entrant within this process
                _held[key]._depth += 1
                return _held[key]
        now = time.time()
        content = json.dumps({"pid": os.getpid(), "host": _this_host(), "started": now, "token": self.token,
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))}).encode()
        for _ in range(5):
            self.directory.mkdir(parents=True, exist_ok=True)  # again: a releasing owner may have removed it empty
            if _create_exclusive(self.path, content):
                self._created = missing  # removed again on release if nothing else was written into them
                self._depth = 1
                with _held_guard:
                    _held[key] = self
                _start_heartbeat()
                return self
            try:
                owner, age = _read_owner(self.path)
            except FileNotFoundError:
                continue  # released between our attempt and the read
            if stale_reason(owner, age) is None:
                raise RunBusy(self.directory, owner)
            self._break(owner)
        raise RunBusy(self.directory, None)

    def _break(self, stale_owner: dict[str, Any] | None) -> None:
        """Remove the lock if it still holds the content judged stale (under the break guard)."""
        guard = self.path.with_name(LOCK_NAME + ".break")
        if not _create_exclusive(guard, str(os.getpid()).encode()):
            try:
                if time.time() - guard.stat().st_mtime > _BREAK_GUARD_STALE_S:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            time.sleep(0.05)
            return
        try:
            try:
                owner, age = _read_owner(self.path)
            except FileNotFoundError:
                return
            same = (owner or {}).get("token") == (stale_owner or {}).get("token")
            if same and stale_reason(owner, age) is not None:
                self.path.unlink(missing_ok=True)
        finally:
            guard.unlink(missing_ok=True)

    def release(self) -> None:
        with _held_guard:
            key = self.path.resolve()
            if _held.get(key) is not self:
                return
            self._depth -= 1
            if self._depth > 0:
                return
            del _held[key]
        try:
            owner, _ = _read_owner(self.path)
            if (owner or {}).get("token") == self.token:
                self.path.unlink()
        except FileNotFoundError:
            pass
        for directory in getattr(self, "_created", []):  # a lock leaves no trace in a run that wrote nothing
            try:
                directory.rmdir()
            except OSError:
                break  # not empty

    def __enter__(self) -> RunLock:
        held = self.acquire()
        if held is not self:  # re-entered: release through the holder
            self._outer = held
        return held

    def __exit__(self, *exc: Any) -> None:
        getattr(self, "_outer", self).release()


def _start_heartbeat() -> None:
    global _heartbeat
    if _heartbeat is None or not _heartbeat.is_alive():
        _heartbeat = threading.Thread(target=_beat, name="condu-bench-lock-heartbeat", daemon=True)
        _heartbeat.start()


def live_owner(directory: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds ``directory``'s lock, while that owner may be alive; None when it is free or stale."""
    try:
        owner, age = _read_owner(Path(directory) / LOCK_NAME)
    except FileNotFoundError:
        return None
    return None if stale_reason(owner, age) is not None else (owner or {})
