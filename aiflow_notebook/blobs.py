"""Blob store: where submitted workflow payloads live, referenced by URI.

``LocalBlobStore`` is a content-addressed directory (default ``$AIFLOW_HOME/blobs``, mode 0700, files 0600):
a blob's file name is the SHA-256 of its bytes. :meth:`LocalBlobStore.get` hands out only objects of its own
directory whose content still has that hash, so a scheduler never unpickles anything else: not a file
elsewhere (``file:///etc/...``, a path that leaves the store), not a blob altered after its upload. The
notebook and a scheduler on the same machine (or sharing a filesystem) use the same directory. Another
store plugs in by implementing ``put``/``get`` with the same promise.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from aiflow_notebook.config import aiflow_home
from aiflow_notebook.errors import AIFlowError

_DIGEST = re.compile(r"[0-9a-f]{64}")


class BlobNotFoundError(AIFlowError, LookupError):
    pass


class BlobRejectedError(AIFlowError):
    """A URI that does not name an intact object of this blob store (outside it, or altered)."""


class BlobStore(Protocol):
    def put(self, data: bytes) -> str: ...

    def get(self, uri: str) -> bytes:
        """The bytes of an object of this store, verified against its content hash."""
        ...


class LocalBlobStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else aiflow_home() / "blobs"

    def put(self, data: bytes) -> str:
        """Store ``data`` once (by its SHA-256) and return its ``file://`` URI."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / digest[:2] / digest
        if not path.exists():
            for directory in (self.root, path.parent):
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        return path.as_uri()

    def get(self, uri: str) -> bytes:
        """The object at ``uri``; refused unless it is in this store and its bytes match its name's hash."""
        parsed = urlparse(uri) if isinstance(uri, str) else None
        if parsed is None or parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise BlobRejectedError(f"{uri!r} is not a file:// URI of the blob store {self.root}")
        path = Path(unquote(parsed.path))
        root = self.root.resolve()
        resolved = path.resolve()
        digest = resolved.name
        if resolved.parent.parent != root or not _DIGEST.fullmatch(digest) or resolved.parent.name != digest[:2]:
            raise BlobRejectedError(f"{uri} is not an object of the blob store {root}; a scheduler runs payloads "
                                    "from its own store only")
        try:
            data = resolved.read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob {uri} does not exist (is the scheduler on another machine without "
                                    "the same AIFLOW_HOME/blobs directory?)") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise BlobRejectedError(f"blob {uri} was altered after its upload (its content hash is {actual[:12]}..., "
                                    f"its name says {digest[:12]}...); refusing to use it")
        return data
