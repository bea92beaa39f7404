"""Any fsspec filesystem as a cold tier (``s3://``, ``gs://``, ``az://``, ...).

The only module that imports fsspec. Conditional create uses ``pipe_file(mode="create")``, which
s3fs sends as ``If-None-Match: *`` (atomic on S3 and S3-compatible servers that honour it);
for protocols where fsspec can only emulate it (check, then write) :attr:`atomic_create` is
False and the commit protocol warns that two concurrent jobs could both commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import fsspec

from mqtier.backend.base import ColdStore, ObjectInfo, check_key
from mqtier.errors import ColdObjectNotFoundError

# Protocols whose pipe_file(mode="create") is a server-side conditional write.
_ATOMIC_CREATE = {"s3", "s3a"}


class FsspecColdStore(ColdStore):
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        fs, root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.fs = fs
        self.root = root.rstrip("/")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.protocol = protocol
        self._atomic = protocol in _ATOMIC_CREATE

    @property
    def atomic_create(self) -> bool:
        return self._atomic

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)

    def create(self, key: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(self._path(key), data, mode="create")
        except FileExistsError:
            return False
        return True

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if end is not None and end <= start:
            self.size(key)  # still "no such object" for a missing key
            return b""
        try:
            data: bytes = self.fs.cat_file(self._path(key), start=start or None, end=end)
        except FileNotFoundError:
            raise ColdObjectNotFoundError(f"{self.url}/{key}: no such object") from None
        except OSError:
            # S3 answers 416 to a range that starts at or past the end; that is just no bytes.
            if (start > 0 or end is not None) and start >= self.size(key):
                return b""
            raise
        return data

    def list(self, prefix: str) -> list[ObjectInfo]:
        head, _, _ = prefix.rpartition("/")
        base = f"{self.root}/{head}" if head else self.root
        self.fs.invalidate_cache(base)  # listings are cached; other writers add objects
        try:
            found: dict[str, dict[str, Any]] = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return []
        cut = len(self.root) + 1
        out = [
            ObjectInfo(path[cut:], int(info.get("size") or 0))
            for path, info in found.items()
            if path[cut:].startswith(prefix) and info.get("type", "file") == "file"
        ]
        out.sort(key=lambda o: o.key)
        return out

    def delete(self, keys: Iterable[str]) -> None:
        paths = [self._path(k) for k in keys]
        if not paths:
            return
        try:
            self.fs.rm(paths)
        except FileNotFoundError:
            pass

    def size(self, key: str) -> int:
        path = self._path(key)
        self.fs.invalidate_cache(path)  # list() fills a cache; other writers change objects
        try:
            info = self.fs.info(path)
            if info.get("type", "file") != "file":  # a prefix of other keys, not an object
                raise FileNotFoundError(path)
        except FileNotFoundError:
            raise ColdObjectNotFoundError(f"{self.url}/{key}: no such object") from None
        return int(info["size"])

    def close(self) -> None:
        # Listings are cached per instance; a long --follow run must see new commits.
        self.fs.invalidate_cache()
