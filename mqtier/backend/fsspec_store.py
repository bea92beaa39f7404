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
from mqtier.errors import ColdObjectNotFoundError, ConfigError, NotFoundError
from mqtier.redact import redact, redact_url

# Protocols whose pipe_file(mode="create") is a server-side conditional write.
_ATOMIC_CREATE = {"s3", "s3a"}
# Protocols whose first path element is a bucket (or container) that must exist beforehand.
BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})
# Protocols without directories to check: the catalog's objects are all there is.
_NO_DIRECTORIES = {"http", "https"}


class FsspecColdStore(ColdStore):
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        # The URL as shown (errors, logs, --json): without the credentials it may carry.
        self.url = redact_url(url.rstrip("/"))
        self._option_names = sorted(storage_options or {})
        fs, root = fsspec.core.url_to_fs(url.rstrip("/"), **(storage_options or {}))
        self.fs = fs
        self.root = root.rstrip("/")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.protocol = protocol
        self._atomic = protocol in _ATOMIC_CREATE
        if protocol in _ATOMIC_CREATE and hasattr(fs, "retries"):
            # s3fs retries some errors 5 times itself, silently, under our retries: ours
            # (RetryingColdStore) are the ones that are shown and that respect --timeout.
            fs.retries = 1

    @property
    def atomic_create(self) -> bool:
        return self._atomic

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def check_root(self, *, may_create: bool) -> None:
        try:
            if self.protocol in BUCKET_PROTOCOLS:
                self._check_bucket()
            elif not may_create and self.protocol not in _NO_DIRECTORIES:
                self.fs.invalidate_cache(self.root)
                if not self.fs.isdir(self.root):
                    raise NotFoundError(f"{self.url}: no such directory (the cold tier's root)")
        except (TypeError, AttributeError, KeyError, ValueError) as exc:
            # What s3fs & co. do with an option of the wrong type ("-o session=x") or value
            # ("-o client_kwargs.endpoint_url=localhost:9000", a malformed region_name; botocore
            # raises ValueErrors for those): fail deep inside on first use. That is a usage
            # error, not a failed request.
            given = ", ".join(f"-o {name}" for name in self._option_names) or "no -o options"
            raise ConfigError(
                f"{self.url}: the storage options were refused ({given}): "
                f"{type(exc).__name__}: {redact(str(exc))}"
            ) from None

    def _check_bucket(self) -> None:
        bucket = self.root.split("/", 1)[0]
        self.fs.invalidate_cache(bucket)
        try:
            self.fs.info(bucket)  # a HEAD of the bucket on S3
        except FileNotFoundError:
            raise NotFoundError(f"{self.url}: bucket {bucket!r} does not exist") from None

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
