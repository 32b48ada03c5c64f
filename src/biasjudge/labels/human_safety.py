"""Safety of a human labels file, which people spend hours on: one labelling session per file at
a time (a lock), and a copy of the file before a session's first write (a backup).

* **One labeller per file.** A session holds `<labels>.lock` (an exclusive `flock`, and the file
  says who holds it: pid, host, labeller, start time). A second session on the same file is
  refused with an error naming the holder. A lock left by a session that died (killed, power
  cut) is *stale*: the operating system released its `flock`, the file still names it; the next
  session reports it and takes it over. A lock naming another host is not taken over without
  `break_lock` (a `flock` may not reach across a network file system).
* **A backup before the first write.** The first time a session writes, the labels file as it
  was is copied to `<labels>.bak-<UTC time>.jsonl` (once per session, and only when the file had
  labels). A session that writes nothing leaves no backup.

The labelling tool itself is :mod:`biasjudge.labels.human`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from biasjudge.errors import BiasJudgeError
from biasjudge.io import atomic_open, side_path


def utc_now() -> str:
    """Now, in UTC, to the second (ISO 8601): the time stamps of locks and labels."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class LockHolder(BaseModel):
    """Who holds (or held) a labels file's lock: the lock file's content."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    pid: int | None = None
    """Process id of the session."""
    host: str = "unknown"
    """Host name the session runs on."""
    labeller: str = "unknown"
    """Annotator id of the session."""
    started_utc: str = "unknown"
    """When the session took the lock (ISO 8601, UTC)."""
    mode: str = "label"
    """label or review."""

    def describe(self) -> str:
        """One line naming the holder, for messages."""
        return f"{self.labeller} (pid {self.pid} on {self.host}, {self.mode} session since {self.started_utc})"


class LabelsLockedError(BiasJudgeError):
    """Another labelling session holds the labels file."""

    def __init__(self, path: Path, lock_path: Path, holder: LockHolder | None, hint: str) -> None:
        self.path = path
        self.lock_path = lock_path
        self.holder = holder
        who = holder.describe() if holder is not None else "an unknown session"
        super().__init__(f"{path} is open in another labelling session: {who}; lock file {lock_path}. {hint}")


def lock_path_for(labels_path: str | Path) -> Path:
    """`human.jsonl` -> `human.jsonl.lock`."""
    labels_path = Path(labels_path)
    return labels_path.with_name(labels_path.name + ".lock")


def _read_holder(fd: int) -> LockHolder | None:
    """The lock file's holder, None when the file is empty; a torn file gives an unknown holder."""
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    if not data.strip():
        return None
    try:
        return LockHolder.model_validate_json(data)
    except ValidationError:
        return LockHolder()


@contextmanager
def labels_lock(
    labels_path: str | Path, *, labeller: str, mode: str = "label", break_lock: bool = False
) -> Iterator[LockHolder | None]:
    """Hold the labelling lock of `labels_path` for the block; yields the stale holder it took over, or None.

    Raises:
        LabelsLockedError: a live session holds the lock, or a lock naming another host is found
            and `break_lock` is False.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        raise BiasJudgeError("the labelling lock needs a POSIX system (fcntl)") from None
    labels_path = Path(labels_path)
    lock_path = lock_path_for(labels_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    me = LockHolder(pid=os.getpid(), host=socket.gethostname(), labeller=labeller, started_utc=utc_now(), mode=mode)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LabelsLockedError(
                labels_path, lock_path, holder, "Wait for it to finish, or label into another file."
            ) from None
        # A holder that was releasing may have unlinked the file between our open and our flock:
        # then we hold a lock on a file nobody else will open. Try again on the file at the path.
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:
            os.close(fd)
            continue
        break
    try:
        stale = _read_holder(fd)
        if stale is not None and stale.host != me.host and not break_lock:
            raise LabelsLockedError(
                labels_path,
                lock_path,
                stale,
                f"It names another host than this one ({me.host}), where this machine cannot tell whether it is "
                "still running. If that session is over, pass --break-lock.",
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, me.model_dump_json().encode() + b"\n")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        yield stale
    finally:
        # Unlink before unlocking, so a waiting session's inode check sends it to a fresh file.
        try:
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                os.unlink(lock_path)
        except FileNotFoundError:
            pass
        os.close(fd)


class SessionBackup:
    """Copies the labels file aside before the session's first write (once, if it had labels)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.had_labels = path.exists() and path.stat().st_size > 0
        self.written: Path | None = None
        self._checked = False

    def before_write(self) -> None:
        """Make the backup, if this is the session's first write and the file had labels."""
        if self._checked:
            return
        self._checked = True
        if not (self.enabled and self.had_labels):
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = side_path(self.path, f".bak-{stamp}.jsonl")
        n = 1
        while target.exists():
            n += 1
            target = side_path(self.path, f".bak-{stamp}-{n}.jsonl")
        with atomic_open(target, "wb") as handle:
            handle.write(self.path.read_bytes())
        self.written = target


def backup_paths(labels_path: str | Path) -> list[Path]:
    """Backups the tool has made of `labels_path`, oldest first."""
    labels_path = Path(labels_path)
    stem = side_path(labels_path, ".bak-").name
    return sorted(p for p in labels_path.parent.glob(f"{stem}*.jsonl"))


__all__ = [
    "LabelsLockedError",
    "LockHolder",
    "SessionBackup",
    "backup_paths",
    "labels_lock",
    "lock_path_for",
    "utc_now",
]
