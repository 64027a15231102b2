"""Where the application master publishes its address, so that nodes on any process or machine find it.

dl-on-flink kept this in the memory of one JVM, which breaks as soon as roles run in more than one
process. Here the store is an interface with two implementations:

- :class:`FileAddressBook` (the default for local runs): a directory on local disk, written by atomic
  rename so a reader never sees half an address. All roles must see the same directory, which holds in
  the local mini-cluster and not across the TaskManagers of a real cluster.
- :class:`BusAddressBook` (jobs on a Flink cluster): the AM publishes its address as an event on the
  aiflow event bus the job already reaches, and nodes look it up there — no shared filesystem. It is
  the only place dl_on_flink imports ``aiflow_notebook.events`` (its event client), lazily.

The default directory is ``$AIFLOW_HOME/dl-on-flink/address-book``: a state folder named like a package
(it was ``dl_on_flink/address_book`` before) is a namespace package to Python's path finder, and a process
whose working directory is ``AIFLOW_HOME`` imported it instead of dl_on_flink. The old folder is not read:
the address book travels pickled with the cluster config, root and all, so every role of a cluster uses
the folder its job was built with, and an AM's entry lives only as long as its cluster.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from aiflow_notebook.core.files import write_atomic
from aiflow_notebook.core.waiting import polling
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
        write_atomic(folder / f"{attempt:08d}.addr", address)

    def wait_for(self, job_key: str, attempt: int | None = None, timeout: float = 60.0) -> tuple[int, str]:
        folder = self.root / _safe(job_key)
        found = _look_until(lambda: self._lookup(folder, attempt), timeout, first_pause=0.02)
        if found is not None:
            return found
        which = "any attempt" if attempt is None else f"attempt {attempt}"
        raise RendezvousError(
            f"no application master published for job {job_key!r} ({which}) in {folder} within {timeout:.0f} s"
        )

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


class BusAddressBook(AddressBook):
    """The AM's address as an event (key ``<job_key>``, namespace :data:`BUS_NAMESPACE`, type
    :data:`BUS_EVENT_TYPE`, value ``{"attempt": n, "address": "tcp://..."}``) on the aiflow event bus.

    It travels pickled with the cluster config to the TaskManagers, so it carries the bus URL and the
    CURVE keys themselves (the server's public key and the job's key pair, in memory), not paths that
    exist only where the job was submitted: build it with :meth:`from_environment` on the submitting side.
    """

    def __init__(self, url: str, auth=None) -> None:
        self.url, self.auth = url, auth
        self._client = None

    @classmethod
    def from_environment(cls) -> BusAddressBook:
        """The bus of this job (``$AIFLOW_EVENT_URL``, ``$AIFLOW_EVENT_SERVER_KEY``, ``$AIFLOW_EVENT_CLIENT_KEY``),
        with the key files read now."""
        from aiflow_notebook.events.auth import CurveAuth
        from aiflow_notebook.events.client import default_event_url
        from aiflow_notebook.events.errors import CurveKeyError

        try:
            return cls(default_event_url(), CurveAuth.of_job())
        except CurveKeyError as exc:
            raise RendezvousError(str(exc)) from None

    def __getstate__(self) -> dict:
        return {"url": self.url, "auth": self.auth, "_client": None}

    def _events(self):
        if self._client is None:
            from aiflow_notebook.events.client import EventClient

            self._client = EventClient(self.url, auth=self.auth, deadline=30.0)
        return self._client

    def publish(self, job_key: str, attempt: int, address: str) -> None:
        self._events().send_event(key=job_key, value=json.dumps({"attempt": attempt, "address": address}),
                                  event_type=BUS_EVENT_TYPE, namespace=BUS_NAMESPACE)

    def wait_for(self, job_key: str, attempt: int | None = None, timeout: float = 60.0) -> tuple[int, str]:
        found = _look_until(_BusReader(self._events(), job_key, attempt).look, timeout, first_pause=0.05)
        if found is not None:
            return found
        which = "any attempt" if attempt is None else f"attempt {attempt}"
        raise RendezvousError(f"no application master published for job {job_key!r} ({which}) on the "
                              f"event bus {self.url} within {timeout:.0f} s")

    def remove(self, job_key: str) -> None:
        try:
            self._events().send_event(key=job_key, value=json.dumps({"address": None}),
                                      event_type=BUS_EVENT_TYPE, namespace=BUS_NAMESPACE)
        except Exception:  # noqa: BLE001 - best effort: the cluster is over either way
            pass

    def __repr__(self) -> str:
        return f"BusAddressBook({self.url!r})"


class _BusReader:
    """The addresses published for one job, read on from where the last look stopped."""

    def __init__(self, events, job_key: str, attempt: int | None) -> None:
        self.events, self.job_key, self.attempt = events, job_key, attempt
        self.since = 0
        self.newest: tuple[int, str] | None = None  # of any attempt, unless withdrawn since

    def look(self) -> tuple[int, str] | None:
        """The address asked for, if it is published by now."""
        for event in self.events.list_events(key=self.job_key, namespace=BUS_NAMESPACE,
                                             event_type=BUS_EVENT_TYPE, since_version=self.since):
            self.since = event.version
            try:
                record = json.loads(event.value)
            except ValueError:
                continue
            if record.get("address") is None:  # withdrawn by remove()
                self.newest = None
                continue
            found = (int(record["attempt"]), str(record["address"]))
            if self.attempt is not None and found[0] == self.attempt:
                return found
            self.newest = found
        return self.newest if self.attempt is None else None


BUS_NAMESPACE = "dl_on_flink"
BUS_EVENT_TYPE = "DL_AM_ADDRESS"
STATE_FOLDER = "dl-on-flink"  # in AIFLOW_HOME; not a Python name, so it never passes for a package there


def default_address_book() -> AddressBook:
    """``$DL_ON_FLINK_ADDRESS_BOOK``, else ``$AIFLOW_HOME/dl-on-flink/address-book`` (``~/.aiflow`` default)."""
    root = os.environ.get("DL_ON_FLINK_ADDRESS_BOOK")
    if not root:
        home = os.environ.get("AIFLOW_HOME") or os.path.join("~", ".aiflow")
        root = os.path.join(home, STATE_FOLDER, "address-book")
    return FileAddressBook(root)


def _look_until(look: Callable[[], tuple[int, str] | None], timeout: float,
                first_pause: float) -> tuple[int, str] | None:
    """``look()``'s first answer within ``timeout`` seconds (asked quickly at first, then every 0.25 s)."""
    for _ in polling(timeout, first_pause, growth=1.5, max_interval=0.25):
        if (found := look()) is not None:
            return found
    return look()  # once more at the deadline


def _safe(job_key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", job_key)
