"""A local cache of the cold tier's immutable objects: commit records, snapshots, index tails.

What the cold tier never changes once written can be kept: a commit record (created once,
never replaced), a snapshot, the tail of an index object and a segment's block index (their
objects are never rewritten under the same key). Each cached copy is checked again when it is
used (the records and snapshots by their ``sha256``, tails and block indexes by the CRC32 the
catalog holds for them), so a damaged or foreign cache file is refetched, never trusted.

Files live under ``$MQTIER_CACHE_DIR``, else ``$XDG_CACHE_HOME/mqtier``, else
``~/.cache/mqtier``, one folder per cold-tier URL, named by the object's key. A cache that
cannot be written (read-only home, full disk) only makes queries slower: the first failure is
a warning and the cache stops writing for the rest of the process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_SAFE = re.compile(r"^[A-Za-z0-9._%/-]+$")


def default_cache_root() -> Path:
    explicit = os.environ.get("MQTIER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mqtier"


class ImmutableCache:
    """Bytes of immutable cold objects by key, in one folder per cold tier."""

    def __init__(self, url: str, root: Path | None = None) -> None:
        self.url = url
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.folder = (root or default_cache_root()) / digest
        self.hits = 0
        self.misses = 0
        self._writable = True
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path | None:
        if not _SAFE.match(key) or ".." in key.split("/"):
            return None  # keys come from the catalog; anything odd is simply not cached
        return self.folder / key

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            with self._lock:
                self.misses += 1
            return None
        with self._lock:
            self.hits += 1
        return data

    def forget(self, key: str) -> None:
        """Drop a cached copy that failed its check (it is fetched again)."""
        path = self._path(key)
        if path is not None and self._writable:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass

    def clear(self) -> None:
        """Drop everything cached for this cold tier (found to be from another history)."""
        if self._writable:
            shutil.rmtree(self.folder, ignore_errors=True)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path is None or not self._writable:
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # readers see the whole file or none
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            with self._lock:
                if self._writable:
                    self._writable = False
                    log.warning(
                        "cache folder %s is not writable (%s); going on without a local cache, "
                        "which costs more requests (set MQTIER_CACHE_DIR to move it)",
                        self.folder,
                        exc.strerror or exc,
                    )
