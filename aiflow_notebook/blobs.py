"""Blob store: where submitted workflow payloads live, referenced by URI.

``LocalBlobStore`` is a content-addressed directory (default ``$AIFLOW_HOME/blobs``): the notebook and a
scheduler on the same machine (or sharing a filesystem) read the same files. Another store plugs in by
implementing ``put``/``get``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from aiflow_notebook.config import aiflow_home
from aiflow_notebook.errors import AIFlowError


class BlobNotFoundError(AIFlowError, LookupError):
    pass


class BlobStore(Protocol):
    def put(self, data: bytes) -> str: ...

    def get(self, uri: str) -> bytes: ...


class LocalBlobStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else aiflow_home() / "blobs"

    def put(self, data: bytes) -> str:
        """Store ``data`` once (by its SHA-256) and return its ``file://`` URI."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / digest[:2] / digest
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return path.as_uri()

    def get(self, uri: str) -> bytes:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise BlobNotFoundError(f"the local blob store reads file:// URIs only, got {uri!r}")
        try:
            return Path(parsed.path).read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {uri} does not exist (is the scheduler on another machine without "
                                    "the same AIFLOW_HOME/blobs directory?)") from None
