"""One way to run moto's S3 server for tests: on 127.0.0.1, port 0, in this process.

moto answers a conditional PUT (``If-None-Match: *``) by looking the key up and then storing
the object, two steps with nothing between them; its server runs each request on a thread of
its own, so two racing creates of one key can both succeed. S3 itself makes that check and the
write one atomic step, and the catalog's commit protocol relies on it (two dispatchers must not
both create commit ``seq``). :func:`start_moto_server` makes moto's object PUTs one at a time,
so the fake keeps the guarantee the real store gives; nothing in mqtier is changed.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_PUTS_ONE_AT_A_TIME = threading.Lock()


def _make_object_puts_atomic() -> None:
    from moto.s3.responses import S3Response

    original: Callable[..., Any] = S3Response.put_object
    if getattr(original, "atomic_for_tests", False):
        return

    @functools.wraps(original)
    def put_object(self: Any) -> Any:
        with _PUTS_ONE_AT_A_TIME:
            return original(self)

    put_object.atomic_for_tests = True  # type: ignore[attr-defined]
    S3Response.put_object = put_object  # type: ignore[method-assign]


@contextmanager
def start_moto_server() -> Iterator[str]:
    """Run moto's S3 server; yields ``http://127.0.0.1:<port>``."""
    from moto.server import ThreadedMotoServer

    _make_object_puts_atomic()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client of the moto server at ``endpoint`` (to make buckets, look at keys)."""
    import boto3

    return boto3.client(
        "s3",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        endpoint_url=endpoint,
        region_name="us-east-1",
    )
