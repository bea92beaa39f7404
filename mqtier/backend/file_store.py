"""A cold tier in a local (or mounted) directory: ``file:///mnt/cold`` or a plain path.

Each object is one file. ``put`` writes a temporary file, syncs it and renames it over the key;
``create`` links the synced temporary file to the key, which fails if the key exists, so of two
processes creating the same key exactly one wins (POSIX ``link`` is atomic, also on NFS).
"""

from __future__ import annotations

import errno
import os
import stat
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from mqtier.backend.base import ColdStore, ObjectInfo, check_key
from mqtier.errors import ColdObjectNotFoundError, ConfigError, NotFoundError

_TMP_SUFFIX = ".mqtier-tmp"


class FileColdStore(ColdStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root.resolve()}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def check_root(self, *, may_create: bool) -> None:
        if self.root.is_dir():
            return
        if self.root.exists():
            raise ConfigError(f"{self.url}: not a directory, so it cannot hold a cold tier")
        if not may_create:
            raise NotFoundError(
                f"{self.url}: no such directory (the cold tier's root); check the URL "
                "(dispatch creates the directory on its first run)"
            )

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and its missing parents, syncing each parent that gains one.

        Without the syncs a power loss could forget a new directory (``data/{seq}/``) while the
        commit record naming an object inside it survives: a committed object would be gone.
        """
        missing: list[Path] = []
        while not directory.is_dir():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            # Made by another writer meanwhile: sync anyway, it may not have done so yet.
            d.mkdir(exist_ok=True)
            self._sync_dir(d.parent)

    def _write_tmp(self, path: Path, data: bytes) -> Path:
        self._make_dirs(path.parent)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            # A full disk or an I/O error: no part-written file stays behind (nothing lists
            # it, nothing would ever delete it, and on a full disk it holds the space).
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    @staticmethod
    def _sync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_tmp(path, data)
        os.replace(tmp, path)
        self._sync_dir(path.parent)

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._write_tmp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        self._sync_dir(path.parent)
        return True

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
            if stat.S_ISDIR(os.fstat(fd).st_mode):  # a prefix of other keys, not an object
                os.close(fd)
                raise FileNotFoundError(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ColdObjectNotFoundError(f"{self.url}/{key}: no such object") from None
        try:
            if end is None:
                end = os.fstat(fd).st_size
            want = max(0, end - start)
            parts: list[bytes] = []
            while want > 0:
                chunk = os.pread(fd, want, start)
                if not chunk:
                    break
                parts.append(chunk)
                start += len(chunk)
                want -= len(chunk)
            return b"".join(parts)
        finally:
            os.close(fd)

    def _walk(self, prefix: str, *, temporary: bool) -> Iterator[tuple[str, Path]]:
        """(key, path) of the objects under ``prefix``, or of the temporary files there."""
        # Walk only the directory the prefix names, not the whole tier.
        head, _, _ = prefix.rpartition("/")
        if head:
            check_key(head)  # no '..', no absolute path: stay inside the root
        base = self.root / head if head else self.root
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.endswith(_TMP_SUFFIX) != temporary:
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if temporary:
                    # a temporary file is named after its key: ".{name}.{uuid}.mqtier-tmp"
                    target = key.rpartition("/")[0] + "/" + name[1:].rsplit(".", 2)[0]
                    if target.lstrip("/").startswith(prefix):
                        yield key, full
                elif key.startswith(prefix):
                    yield key, full

    def list(self, prefix: str) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        for key, full in self._walk(prefix, temporary=False):
            try:
                out.append(ObjectInfo(key, full.stat().st_size))
            except FileNotFoundError:
                continue  # deleted while listing
        out.sort(key=lambda o: o.key)
        return out

    def list_incomplete(self, prefix: str, older_than_s: float = 0.0) -> Sequence[str]:
        born_before = time.time() - older_than_s
        out = []
        for key, path in self._walk(prefix, temporary=True):
            try:
                if older_than_s <= 0 or path.stat().st_mtime < born_before:
                    out.append(key)
            except FileNotFoundError:
                continue  # its writer finished (or another collector took it) meanwhile
        return sorted(out)

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            try:
                self._path(key).unlink()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                pass
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            if path.is_dir():
                raise FileNotFoundError(path)
            return path.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            raise ColdObjectNotFoundError(f"{self.url}/{key}: no such object") from None
