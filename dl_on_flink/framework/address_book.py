"""Where the application master publishes its address, so that nodes on any process or machine find it.

dl-on-flink kept this in the memory of one JVM, which breaks as soon as roles run in more than one
process. Here the store is an interface with a file-backed default: a shared directory (local disk in the
mini-cluster; NFS or similar across machines), written by atomic rename so a reader never sees half an
address. An event-bus implementation (``aiflow_notebook.events``) plugs in later by implementing the same
two methods; nothing else in dl_on_flink needs to change.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path

from dl_on_flink.errors import RendezvousError


class AddressBook(ABC):
    """Publish and look up the address of a cluster's application master."""

    @abstractmethod
    def publish(self, job_key: str, attempt: int, address: str) -> None:
        """Record ``address`` as the AM of ``job_key`` at ``attempt`` (the AM's own restart count)."""

    @abstractmethod
    def wait_for(self, job_key: str, attempt: int | None = None, timeout: float = 60.0) -> tuple[int, str]:
        """The (attempt, address) published for ``job_key``: that attempt, or the newest when None.

        Raises RendezvousError when nothing is published within ``timeout`` seconds.
        """

    def remove(self, job_key: str) -> None:  # noqa: B027 - optional clean-up, a no-op by default
        """Forget ``job_key`` (called by the AM when the cluster ends)."""


class FileAddressBook(AddressBook):
    """One directory per job under ``root``, one file per AM attempt, written by atomic rename."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()

    def publish(self, job_key: str, attempt: int, address: str) -> None:
        folder = self.root / _safe(job_key)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            fh.write(address)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / f"{attempt:08d}.addr")

    def wait_for(self, job_key: str, attempt: int | None = None, timeout: float = 60.0) -> tuple[int, str]:
        folder = self.root / _safe(job_key)
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            found = self._lookup(folder, attempt)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                which = "any attempt" if attempt is None else f"attempt {attempt}"
                raise RendezvousError(
                    f"no application master published for job {job_key!r} ({which}) in {folder} "
                    f"within {timeout:.0f} s"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def remove(self, job_key: str) -> None:
        shutil.rmtree(self.root / _safe(job_key), ignore_errors=True)

    @staticmethod
    def _lookup(folder: Path, attempt: int | None) -> tuple[int, str] | None:
        if attempt is not None:
            path = folder / f"{attempt:08d}.addr"
            return (attempt, path.read_text()) if path.exists() else None
        try:
            names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".addr"))
        except FileNotFoundError:
            return None
        if not names:
            return None
        return int(names[-1].split(".")[0]), (folder / names[-1]).read_text()

    def __repr__(self) -> str:
        return f"FileAddressBook({str(self.root)!r})"


def default_address_book() -> AddressBook:
    """``$DL_ON_FLINK_ADDRESS_BOOK``, else ``$AIFLOW_HOME/dl_on_flink/address_book`` (``~/.aiflow`` default)."""
    root = os.environ.get("DL_ON_FLINK_ADDRESS_BOOK")
    if not root:
        home = os.environ.get("AIFLOW_HOME") or os.path.join("~", ".aiflow")
        root = os.path.join(home, "dl_on_flink", "address_book")
    return FileAddressBook(root)


def _safe(job_key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", job_key)
