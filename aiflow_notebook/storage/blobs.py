"""Blob store: where submitted workflow payloads live, referenced by URI.

``LocalBlobStore`` is a content-addressed directory (default ``$AIFLOW_HOME/blobs``, mode 0700, files 0600):
a blob's file name is the SHA-256 of its bytes. :meth:`LocalBlobStore.get` hands out only objects of its own
directory whose content still has that hash, so a scheduler never unpickles anything else: not a file
elsewhere (``file:///etc/...``, a path that leaves the store), not a blob altered after its upload. The
notebook and a scheduler on the same machine (or sharing a filesystem) use the same directory. Another
store plugs in by implementing ``put``/``get`` with the same promise.

A process connected to an ``aiflow server`` (``af.connect``) shares no filesystem with it: its
:class:`RemoteBlobStore` uploads over the authenticated connection, in chunks of at most
:data:`CHUNK_BYTES`, each with its own SHA-256; the server (:class:`BlobUploads`) checks every chunk, then
the whole object against the hash it is named by, before it enters the server's ``LocalBlobStore``. An
object the server already has is not uploaded again.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from aiflow_notebook.core.config import aiflow_home
from aiflow_notebook.core.errors import AIFlowError
from aiflow_notebook.core.files import private_dir, write_atomic

_DIGEST = re.compile(r"[0-9a-f]{64}")
CHUNK_BYTES = 1 << 20  # bytes per upload request
MAX_UPLOAD_BYTES = 1 << 30  # the largest object a server accepts by default
BLOB_HAS = "blob.has"
BLOB_PUT = "blob.put"


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
            private_dir(path.parent, within=self.root)
            write_atomic(path, data)
        return path.as_uri()

    def adopt(self, path: Path, digest: str) -> str:
        """Move the file ``path`` (on this store's filesystem, its SHA-256 checked: ``digest``) into the
        store; returns its URI."""
        target = self.root / digest[:2] / digest
        private_dir(target.parent, within=self.root)
        os.chmod(path, 0o600)
        os.replace(path, target)
        return target.as_uri()

    def uri_of(self, digest: str) -> str | None:
        """The URI of the object with SHA-256 ``digest`` if this store holds it, else None."""
        path = self.root / digest[:2] / digest
        return path.as_uri() if _DIGEST.fullmatch(digest) and path.exists() else None

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


class BlobTooLargeError(AIFlowError):
    """An object larger than the server accepts."""


class RemoteBlobStore:
    """Uploads into the blob store of the ``aiflow server`` that ``client`` (an ``EventClient``) reaches.

    ``put`` returns the server's URI of the object (what its scheduler is given); ``get`` is the server's
    business (a notebook never loads a payload back)."""

    shares_filesystem = False  # the server runs jobs in its own working directory

    def __init__(self, client, chunk_bytes: int = CHUNK_BYTES):
        self.client, self.chunk_bytes = client, chunk_bytes

    def put(self, data: bytes) -> str:
        """Upload ``data`` unless the server has it already; returns the server's URI of it."""
        digest = hashlib.sha256(data).hexdigest()
        answer, _ = self.client.call(BLOB_HAS, {"digest": digest, "size": len(data)})
        _raise_for(answer)
        if answer.get("uri"):
            return answer["uri"]
        view = memoryview(data)
        offset = 0
        while True:
            chunk = view[offset:offset + self.chunk_bytes]
            answer, _ = self.client.call(BLOB_PUT, {"digest": digest, "size": len(data), "offset": offset,
                                                    "chunk_sha256": hashlib.sha256(chunk).hexdigest()}, bytes(chunk))
            _raise_for(answer)
            offset += len(chunk)
            if answer.get("uri"):
                return answer["uri"]
            if offset >= len(data):
                raise BlobRejectedError(f"the server took all {len(data)} bytes of blob {digest[:12]}... but "
                                        "did not store it")

    def get(self, uri: str) -> bytes:
        raise BlobRejectedError(f"{uri} is in the server's blob store; only the server reads it")


def _raise_for(answer) -> None:
    if isinstance(answer, dict) and "error" in answer:
        kinds = {"BlobTooLargeError": BlobTooLargeError, "BlobRejectedError": BlobRejectedError}
        error = answer["error"]
        raise kinds.get(error.get("type"), AIFlowError)(error.get("message"))


class BlobUploads:
    """The server's side of uploads: chunks appended in order to a private staging file, each chunk
    checked against its SHA-256, the whole object against its name, then moved into ``store``."""

    def __init__(self, store: LocalBlobStore, max_bytes: int = MAX_UPLOAD_BYTES):
        self.store, self.max_bytes = store, max_bytes
        self._lock = threading.Lock()

    def has(self, args) -> dict:
        digest, size = self._check(args)
        return {"uri": self.store.uri_of(digest)}

    def put(self, user: str | None, args, data: bytes) -> dict:
        digest, size = self._check(args)
        offset, chunk_hash = args.get("offset"), args.get("chunk_sha256")
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < max(size, 1):
            raise BlobRejectedError(f"bad offset {offset!r} for an object of {size} bytes")
        if not isinstance(chunk_hash, str) or hashlib.sha256(data).hexdigest() != chunk_hash:
            raise BlobRejectedError(f"chunk at offset {offset} of blob {digest[:12]}... does not match its SHA-256 "
                                    "(corrupted in transit); upload it again")
        if offset + len(data) > size or (not data and size):
            raise BlobRejectedError(f"a chunk of {len(data)} bytes at offset {offset} does not fit an object of "
                                    f"{size} bytes")
        uri = self.store.uri_of(digest)
        if uri is not None:
            return {"uri": uri}
        staging = self.store.root / ".uploads"
        name = hashlib.sha256(f"{user}/{digest}".encode()).hexdigest()
        part = staging / f"{name}.part"
        with self._lock:
            private_dir(staging, within=self.store.root)
            have = part.stat().st_size if part.exists() else 0
            if offset == 0:
                have = 0
            elif offset != have:
                raise BlobRejectedError(f"blob {digest[:12]}...: expected the chunk at offset {have}, got {offset}; "
                                        "upload it again from the start")
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if offset == 0 else 0), 0o600)
            with os.fdopen(fd, "r+b") as fh:
                fh.seek(offset)
                fh.write(data)
            if offset + len(data) < size:
                return {"received": offset + len(data)}
            with part.open("rb") as fh:
                actual = hashlib.file_digest(fh, "sha256").hexdigest()
            if actual != digest:
                part.unlink()
                raise BlobRejectedError(f"the uploaded object does not match its SHA-256 {digest[:12]}...; not stored")
            return {"uri": self.store.adopt(part, digest)}

    def _check(self, args) -> tuple[str, int]:
        if not isinstance(args, dict):
            raise BlobRejectedError("an upload request needs {digest, size, ...}")
        digest, size = args.get("digest"), args.get("size")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise BlobRejectedError(f"bad blob digest {digest!r}: expected 64 lowercase hex digits (SHA-256)")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BlobRejectedError(f"bad blob size {size!r}")
        if size > self.max_bytes:
            raise BlobTooLargeError(f"an object of {size} bytes is larger than this server accepts "
                                    f"({self.max_bytes} bytes); store it elsewhere and pass a reference")
        return digest, size
