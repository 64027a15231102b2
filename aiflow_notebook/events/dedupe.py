"""Which sends are already stored: the server's memory of ``(client id, sequence number)`` pairs.

A client numbers its sends 1, 2, 3, ... under its client id and resends the same number after a timeout,
so the server must answer a resend with the version it stored the first time. The log has a unique index
on ``(client_id, seq)``, which is the final word; this registry keeps, per recently active client, its
highest sequence number and every send in a window below it, so the common cases cost a dict lookup:

- a number above the client's highest is new;
- a number within the window is new unless the registry holds it (the window is always complete,
  because it is loaded from the log when a client is first seen, then kept up to date);
- only a number below the window (a resend delayed by more than ``window`` later sends) asks the log.

A client not seen since the server started is loaded from the log on its first request, so the registry
survives a server restart. Idle clients are evicted (least recently used first); memory stays below
``max_clients * 1.25 * window`` entries (about 150 MB with the defaults, far less in practice).
"""

from __future__ import annotations

from collections import OrderedDict

from aiflow_notebook.events.log import EventLog


class _Client:
    __slots__ = ("last_seq", "stored")

    def __init__(self, last_seq: int, stored: dict[int, tuple[int, int]]):
        self.last_seq = last_seq
        self.stored = stored  # seq -> (version, create_time), complete above last_seq - window


class SendRegistry:
    def __init__(self, log: EventLog, window: int = 1024, max_clients: int = 1024):
        self._log = log
        self.window = window
        self.max_clients = max_clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def last_seq(self, client_id: str) -> int:
        """The highest sequence number stored for ``client_id`` (0 for a new client)."""
        return self._client(client_id).last_seq

    def lookup(self, client_id: str, seq: int) -> tuple[int, int] | None:
        """(version, create_time) if send ``(client_id, seq)`` is already stored, else None."""
        client = self._client(client_id)
        hit = client.stored.get(seq)
        if hit is not None or seq > client.last_seq - self.window:
            return hit
        return self._log.find_send(client_id, seq)

    def record(self, client_id: str, seq: int, version: int, create_time: int) -> None:
        """Remember a send that has just been committed."""
        client = self._clients.get(client_id)
        if client is None:  # evicted between lookup and commit: it reloads from the log when next seen
            return
        client.stored[seq] = (version, create_time)
        if seq > client.last_seq:
            client.last_seq = seq
        if len(client.stored) > self.window + self.window // 4:
            floor = client.last_seq - self.window
            client.stored = {s: v for s, v in client.stored.items() if s > floor}

    def forget(self) -> None:
        """Drop everything (after a database error: the log is the truth and is re-read on demand)."""
        self._clients.clear()

    def _client(self, client_id: str) -> _Client:
        client = self._clients.get(client_id)
        if client is not None:
            self._clients.move_to_end(client_id)
            return client
        last_seq, rows = self._log.client_sends(client_id, self.window)
        client = _Client(last_seq, {seq: (version, ctime) for seq, version, ctime in rows})
        self._clients[client_id] = client
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return client
