"""``StoreService``: the server's side of :class:`~aiflow_notebook.meta.remote.RemoteStore` and of uploads.

``aiflow server start`` hands it to its event server (``EventServer.serve_calls``), which runs it on worker
threads for every CALL. It checks each request (a known method, JSON arguments of the right shape) and
answers store errors as data, so a bad request gets a clear error and never disturbs the server. Model-stage
events that a call causes are published with the authenticated client's name as sender (the store's
publisher is admitted to name it: :class:`ActingPublisher`).
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager, nullcontext
from typing import Any

from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.vocabulary import DEFAULT_NAMESPACE
from aiflow_notebook.meta.remote import REMOTE_METHODS, STORE_METHOD_PREFIX, decode, encode, error_to_wire

log = logging.getLogger(__name__)


class StoreService:
    """Answers ``store.<method>`` with ``store`` and ``blob.has``/``blob.put`` with ``uploads``
    (a :class:`~aiflow_notebook.storage.blobs.BlobUploads`)."""

    def __init__(self, store: Any, uploads: Any, publisher: ActingPublisher | None = None):
        self.store, self.uploads, self.publisher = store, uploads, publisher

    def __call__(self, user: str | None, method: str, args: Any, data: bytes) -> tuple[Any, bytes]:
        from aiflow_notebook.events.server import CallError
        from aiflow_notebook.storage.blobs import BLOB_HAS, BLOB_PUT

        try:
            if method == BLOB_HAS:
                return self.uploads.has(args), b""
            if method == BLOB_PUT:
                return self.uploads.put(user, args, data), b""
            if not method.startswith(STORE_METHOD_PREFIX) or method[len(STORE_METHOD_PREFIX):] not in REMOTE_METHODS:
                raise CallError("bad-request", f"unknown method {method!r}; the store answers "
                                               f"{', '.join(sorted(REMOTE_METHODS))}")
            name = method[len(STORE_METHOD_PREFIX):]
            call_args, call_kwargs = _arguments(args)
            with self._acting_as(user):
                try:
                    value = getattr(self.store, name)(*call_args, **call_kwargs)
                except TypeError as exc:  # wrong arguments for the method
                    raise CallError("bad-request", f"bad arguments for {name}: {exc}") from None
            if isinstance(value, bytes):
                return {"bytes": True}, value
            return {"value": encode(value)}, b""
        except AIFlowError as exc:
            return {"error": error_to_wire(exc)}, b""

    def _acting_as(self, user: str | None):
        return self.publisher.acting_as(user) if self.publisher is not None else nullcontext()


def _arguments(args: Any) -> tuple[list, dict]:
    from aiflow_notebook.events.server import CallError

    if not isinstance(args, dict) or not isinstance(args.get("args", []), list) or \
            not isinstance(args.get("kwargs", {}), dict):
        raise CallError("bad-request", 'store arguments must be {"args": [...], "kwargs": {...}}')
    try:
        return decode(args.get("args", [])), decode(args.get("kwargs", {}))
    except (AIFlowError, TypeError, ValueError) as exc:
        raise CallError("bad-request", f"unreadable arguments: {exc}") from None


class ActingPublisher:
    """Publishes the store's events through ``inner``, naming as sender the client a call is made for."""

    def __init__(self, inner: Any):
        self.inner = inner
        self._local = threading.local()

    @contextmanager
    def acting_as(self, user: str | None):
        self._local.user = user
        try:
            yield
        finally:
            self._local.user = None

    def publish(self, key: str, value: str, event_type: str, namespace: str = DEFAULT_NAMESPACE,
                sender: str | None = None) -> None:
        self.inner.publish(key, value, event_type, namespace, getattr(self._local, "user", None) or sender)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

