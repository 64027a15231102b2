"""Private files and directories: state that only this user may read (job specs and logs, keys, sockets,
exit statuses, address books), written so that a crash never leaves half a file behind.

One definition of each: a directory is 0700 and ours (:func:`private_dir`), a file is 0600 (also when it
existed with wider rights, :func:`write_private`), and a file that readers must see whole is written beside
its place, flushed to disk and renamed over it (:func:`write_atomic`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from aiflow_notebook.core.errors import AIFlowError


class UnsafePathError(AIFlowError, PermissionError):
    """A directory meant to be private belongs to another user."""


def private_dir(directory: str | os.PathLike, *, within: str | os.PathLike | None = None) -> Path:
    """Make ``directory`` (and its missing parents) mode 0700, check that it is this user's, and return it.

    ``within``: also narrow every directory between ``directory`` and this one to 0700 (a tree of state
    whose upper levels may have been made by someone's umask). A directory of another user is refused with
    :class:`UnsafePathError`: what we would keep there could be read or replaced by them.
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid != os.geteuid():
        raise UnsafePathError(f"{directory} belongs to another user; private state must be in a directory only "
                              "you can enter (set AIFLOW_HOME to one of yours)")
    top = Path(within) if within is not None else directory
    current = directory
    while True:
        if stat.S_IMODE(current.stat().st_mode) != 0o700:
            os.chmod(current, 0o700)
        if current == top or top not in current.parents:
            return directory
        current = current.parent


def write_private(path: str | os.PathLike, data: str | bytes, *, append: bool = False) -> None:
    """Write (or append to) a file that only this user may read: mode 0600, also when it existed with wider
    rights."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data.encode() if isinstance(data, str) else data)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: str | bytes, *, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` (mode 0600) so that a reader sees the old file or the new one whole,
    also after a crash or power loss: written beside it, flushed to disk, then renamed over it.

    ``sync=False`` skips the flush to disk: still whole for every reader, but not kept through a power loss;
    for state rewritten several times a second that dies with the processes anyway (a progress report)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
