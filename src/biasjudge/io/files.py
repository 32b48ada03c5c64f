"""Files on disk, below the records: atomic writes, a folder's lock, hashes, and the names of the
side files a data file gets (`.meta.json`, `.rejects.jsonl`, ...).

:mod:`biasjudge.io` builds on these (and exports them too): callers import them from either.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from biasjudge.errors import ConfigError


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def folder_lock(folder: str | Path, name: str = ".lock", *, what: str = "another process") -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (the file `folder/name`) for the block.

    A second process asking for the same lock is refused at once with a ConfigError naming the
    folder and the process that holds it, so two jobs never interleave lines in one file. The lock
    is the operating system's (filelock), so a killed job leaves no stale lock behind.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = path.with_suffix(".pid")
        who = holder.read_text().strip() if holder.exists() else "unknown"
        raise ConfigError(
            f"{folder}: {what} is already writing here (process {who}); wait for it to finish or use another folder"
        ) from None
    try:
        path.with_suffix(".pid").write_text(f"{os.getpid()}\n")
        yield path
    finally:
        path.with_suffix(".pid").unlink(missing_ok=True)
        lock.release()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def side_path(path: str | Path, ending: str) -> Path:
    """A side file of `path`, unique per data file: `pairs.jsonl` + `.meta.json` -> `pairs.meta.json`.

    A final `.jsonl` or `.json` is dropped (the reference's names: `pairs.meta.json`,
    `answer_key_kappa.meta.json`); any other suffix is kept, so `pairs.jsonl` and `pairs.parquet`
    (or `pairs.v2.jsonl`) never share a side file.

    >>> side_path("out/pairs.parquet", ".meta.json"), side_path("out/labels.jsonl", "_teacher.jsonl")
    (PosixPath('out/pairs.parquet.meta.json'), PosixPath('out/labels_teacher.jsonl'))
    """
    path = Path(path)
    stem = path.name
    for suffix in (".jsonl", ".json"):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    return path.with_name(stem + ending)


def meta_path(path: str | Path) -> Path:
    """The sidecar of an output file, unique per file.

    >>> meta_path("out/pairs.jsonl"), meta_path("out/pairs.parquet"), meta_path("out/pairs.v2.jsonl")
    (PosixPath('out/pairs.meta.json'), PosixPath('out/pairs.parquet.meta.json'), PosixPath('out/pairs.v2.meta.json'))
    """
    return side_path(path, ".meta.json")


def rejects_path(source: str | Path, folder: str | Path | None = None) -> Path:
    """The side file for the rejected rows of input `source` (in `folder`, default beside it).

    >>> rejects_path("data/pairs.jsonl", "out"), rejects_path("data/pairs.parquet", "out")
    (PosixPath('out/pairs.rejects.jsonl'), PosixPath('out/pairs.parquet.rejects.jsonl'))
    """
    side = side_path(source, ".rejects.jsonl")
    return side if folder is None else Path(folder) / side.name
