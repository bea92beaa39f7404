"""The exception tree. Each class carries the CLI exit code it maps to.

Library code raises these and never prints or exits; ``mqtier.cli`` turns them into one line on
stderr and ``exit_code``. The table of codes is documented in ``man/mqtier.1`` and the README.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar


class MqtierError(Exception):
    """Root of every error mqtier raises on purpose.

    ``hint``, when given, is a command that would work; the CLI prints it as a ``try:`` line
    under the error (and as ``hint`` in the JSON error object).
    """

    exit_code: ClassVar[int] = 1
    hint: str | None = None  # also for instances built without __init__ (ingest._located)

    def __init__(self, *args: object, hint: str | None = None) -> None:
        super().__init__(*args)
        self.hint = hint


class ConfigError(MqtierError, ValueError):
    """A setting or option is invalid (bad URL, bad size, conflicting flags)."""

    exit_code = 2


class NotFoundError(MqtierError, LookupError):
    """A key, message id, topic, queue or offset does not exist."""

    exit_code = 3


class CorruptionError(MqtierError):
    """Stored bytes failed a check; never returned as data."""

    exit_code = 4


class CorruptRecordError(CorruptionError):
    """A commit-log record (or other fixed structure) failed a size, magic or CRC check."""

    def __init__(self, path: Path | str, offset: int, detail: str) -> None:
        name = _store_relative(Path(path)) if str(path) else "?"
        super().__init__(f"{name} @ {offset}: {detail}")
        self.path = Path(path)
        self.offset = offset
        self.detail = detail


def _store_relative(path: Path) -> str:
    """``commitlog/000…`` or ``consumequeue/t1/1/000…``: commit-log, consume-queue and index
    files share their 20-digit names, so the bare name would not say which file is bad."""
    from mqtier.format import layout as L

    dirs = (L.DIR_COMMITLOG, L.DIR_CONSUMEQUEUE, L.DIR_CONSUMEQUEUE_EXT, L.DIR_INDEX)
    parts = path.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in dirs:
            return "/".join(parts[i:])
    return path.name


class MissingCommittedObjectError(CorruptionError):
    """An object the cold tier's latest catalog commits to is gone: committed data was lost."""


class UnsupportedFormatError(CorruptionError):
    """A file has a magic or version this release cannot read."""


class StoreLockedError(MqtierError):
    """Another process holds the store's lock, so it cannot be opened for writing."""

    exit_code = 6


class NotAStoreError(MqtierError):
    """A directory given as a store holds no store (and creation was not requested)."""

    exit_code = 7


class InputFormatError(MqtierError, ValueError):
    """An input line or file could not be parsed into a message."""

    exit_code = 8

    def __init__(self, source: str, line: int, detail: str) -> None:
        super().__init__(f"{source}:{line}: {detail}")
        self.source = source
        self.line = line
        self.detail = detail


class MessageTooLargeError(MqtierError, ValueError):
    """A message body exceeds the store's maximum message size."""

    exit_code = 9


class InvalidTopicError(MqtierError, ValueError):
    """A topic name is too long or could escape a directory."""

    exit_code = 10


class PropertiesTooLongError(MqtierError, ValueError):
    """Encoded properties exceed RocketMQ's 32767-byte limit."""

    exit_code = 11


class ReadOnlyStoreError(MqtierError):
    """A write was attempted on a store opened read-only."""

    exit_code = 12


class InvalidMessageError(MqtierError, ValueError):
    """A key, tag or property cannot be stored (separator characters, bad queue id)."""

    exit_code = 13


class ColdStoreError(MqtierError):
    """A cold-tier request failed and retrying did not help (network, permissions, server)."""

    exit_code = 14


class ColdTimeoutError(ColdStoreError):
    """The command's time limit (``--timeout``) ran out while talking to the cold tier.

    Exit 14 like any unreachable tier: a time limit is how a slow or silent tier shows, and
    scripts that retry later on 14 need no second code. The message says it was the limit.
    """


class ColdObjectNotFoundError(ColdStoreError, NotFoundError):
    """A cold-tier object that should exist does not."""

    exit_code = 3


class CommitConflictError(MqtierError):
    """Another tiering job committed to the same cold prefix first; this run committed nothing."""

    exit_code = 5


class ColdHistoryMismatchError(MqtierError):
    """The cold tier's messages of a queue are not this store's (two stores, one broker name?)."""

    exit_code = 15
