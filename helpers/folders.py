"""Folders written whole or not at all: what every stage that writes a folder (a variant's part, a built or trained
model, a dataset) writes into, so that a process killed at any point leaves nothing that is ever loaded, and two
writers of one folder never mix or delete each other's work.

A writer holds a lock on the folder's path (a file in the system's temporary folder, named after the path, so that
model folders hold nothing but the model; the system releases it when its process dies) while it builds
``.<name>.partial`` and swaps it in: the old folder stays whole and in place until the new one takes its place
in one step (Linux's ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, which the next writer completes if a kill
falls between them). Files are flushed to disk (fsync) before the swap, so a power cut cannot leave a renamed folder
of empty files.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from filelock import FileLock

AT_FDCWD, RENAME_EXCHANGE = -100, 2  # linux/fcntl.h, linux/fs.h


@contextlib.contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; swap it in as ``final`` only if the block finishes.

    A second writer of the same folder waits for the first, then writes its own (the last to finish is kept).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path(final)):
        tmp, old = final.with_name(f".{final.name}.partial"), final.with_name(f".{final.name}.old")
        if old.is_dir() and not final.exists():  # a writer killed between the two renames of a swap
            old.rename(final)
        for leftover in (tmp, old):  # a killed writer's: nobody else writes them while the lock is held
            shutil.rmtree(leftover, ignore_errors=True)
        tmp.mkdir()
        try:
            yield tmp
            flush_to_disk(tmp)
            swap_in(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # this writer's work on failure, the old folder on success


def lock_path(folder: Path) -> Path:
    """The lock file of a folder's writers: one per absolute path, kept out of the model folders."""
    name = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:24]
    locks = Path(tempfile.gettempdir()) / "pixart-openvino-locks"
    locks.mkdir(exist_ok=True)
    return locks / f"{name}.lock"


def swap_in(new: Path, final: Path) -> None:
    """Put the folder ``new`` at ``final`` in one step; the folder that was there (if any) is left at ``new``."""
    if not final.exists():
        os.rename(new, final)
    elif not exchange(new, final):
        old = final.with_name(f".{final.name}.old")
        os.rename(final, old)
        os.rename(new, final)
        os.rename(old, new)
    fsync_path(final.parent)


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux's ``renameat2`` with ``RENAME_EXCHANGE``); False where the system or its
    file system has no such call."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(second))


def flush_to_disk(folder: Path) -> None:
    """fsync every file and folder under ``folder``, and ``folder`` itself."""
    for path in sorted(Path(folder).rglob("*"), key=lambda p: -len(p.parts)):  # a folder after what it holds
        fsync_path(path)
    fsync_path(folder)


def fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text_atomically(path: Path, text: str) -> None:
    """Write a file whole or not at all: through a temporary file of a name of its own, flushed, then renamed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(tmp, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
