"""Fault-injection child: run the ``mqtier`` CLI with one file-layer call made to fail.

``python -m tests.faults.inject CALL ERRNO NTH MODE -- ARGS...`` runs ``mqtier ARGS...`` in
this process with ``os.CALL`` wrapped: its NTH call (counting from 1, only calls on files
under ``$MQTIER_FAULT_ROOT``) raises ``OSError(ERRNO)``, and with MODE ``sticky`` so does
every later one (a disk that stays full), with ``once`` only that call (a transient EIO).

The fault is real to the code under test: it is the same ``OSError`` the kernel's error
would raise, at the same call. Only where it happens is chosen, which a real full disk or a
failing sector cannot do repeatably.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

# Calls that take a file descriptor first; the others (posix_fallocate too) take one as well.
FD_CALLS = ("write", "pwrite", "fsync", "fdatasync", "posix_fallocate", "ftruncate")


def _under_root(fd: int, root: str) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith(root)
    except OSError:
        return False


def install(call: str, code: int, nth: int, sticky: bool, root: str) -> None:
    real: Callable[..., Any] = getattr(os, call)
    seen = 0

    def faulty(fd: int, *args: Any) -> Any:
        nonlocal seen
        if _under_root(fd, root):
            seen += 1
            if seen == nth or (sticky and seen > nth):
                raise OSError(code, os.strerror(code))
        return real(fd, *args)

    setattr(os, call, faulty)


def main() -> None:
    call, name, nth, mode, sep, *args = sys.argv[1:]
    assert call in FD_CALLS and sep == "--" and mode in ("once", "sticky")
    install(call, getattr(errno, name), int(nth), mode == "sticky", os.environ["MQTIER_FAULT_ROOT"])
    from mqtier.cli import app

    sys.argv = ["mqtier", *args]
    app()


if __name__ == "__main__":
    main()
