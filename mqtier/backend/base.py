"""The ``ColdStore`` contract every cold-tier backend implements.

Keys are ``/``-separated paths relative to the cold tier's root URL. Objects are immutable in
practice (mqtier writes each key once), so the contract needs no append and no rename: whole-object
put, conditional create, ranged read, prefix listing, delete and size. That is what every object
store offers with one request each, which keeps the request bill predictable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


class ColdStore(ABC):
    """A flat key space of immutable objects under one root URL."""

    url: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write the whole object (replacing any previous one)."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write the object only if ``key`` does not exist yet; False when it already did.

        This is the one atomic primitive the commit protocol relies on: of two writers that
        create the same key, exactly one gets True.
        """

    @abstractmethod
    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the object (to its end when ``end`` is None).

        Raises:
            ColdObjectNotFoundError: no such object.
        """

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""

    @abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Delete objects; keys that do not exist are ignored."""

    @abstractmethod
    def size(self, key: str) -> int:
        """Size of the object in bytes.

        Raises:
            ColdObjectNotFoundError: no such object.
        """

    def list_incomplete(self, prefix: str, older_than_s: float = 0.0) -> Sequence[str]:
        """Keys of writes under ``prefix`` that were started and never finished.

        ``older_than_s``: only writes started at least that long ago. A write in progress looks
        the same as an abandoned one, so a collector passes a grace period: deleting another
        live writer's half-written object would fail that writer's upload.

        A writer killed mid-put leaves these behind where the backend cannot finish or undo the
        write by itself (a file tier's temporary files); they are not objects, never appear in
        :meth:`list`, and :meth:`delete` removes them. Object stores that keep no such debris
        answer with nothing.
        """
        return []

    def check_root(self, *, may_create: bool) -> None:  # noqa: B027 - most backends: nothing to check
        """Raise unless the tier's root (a directory, a bucket) exists and can be used.

        A missing root must not read as an empty tier: an operator who mistyped a bucket, or
        whose bucket was deleted, would see every message "pending" and nothing tiered. With
        ``may_create`` a missing directory is fine (the first ``dispatch`` makes it); a missing
        bucket never is (mqtier does not create buckets).

        Raises:
            NotFoundError: no such root (exit 3).
            ConfigError: the root is not something a tier can live in (a file, say).
        """

    def exists(self, key: str) -> bool:
        from mqtier.errors import ColdObjectNotFoundError

        try:
            self.size(key)
        except ColdObjectNotFoundError:
            return False
        return True

    @property
    def atomic_create(self) -> bool:
        """Whether :meth:`create` is atomic against other processes and machines."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections (a no-op for most backends)."""


def check_key(key: str) -> str:
    """Refuse keys that could escape the root or are not plain relative paths."""
    from mqtier.errors import ConfigError

    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in key:
        raise ConfigError(f"invalid cold object key {key!r}")
    return key
