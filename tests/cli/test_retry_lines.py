"""Long waits on the cold tier say what is happening, and --timeout bounds them (issue #11, 7).

Real servers only: a closed port (connection refused), a TCP server that accepts and never
answers (timeouts), an HTTP server answering 503, and moto's S3 server behind a slow proxy.
Before the fix an unreachable endpoint gave 45 s of silence (botocore's and s3fs' retries
stacked under ours) and there was no --timeout.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqtier import Message, Store
from mqtier.backend.open import open_cold_store, raw_cold_store
from mqtier.cli import app
from mqtier.errors import ColdStoreError
from mqtier.tier.catalog import load_catalog
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from mqtier.tier.reader import ColdReader
from tests.moto_s3 import start_moto_server

SECRET = "TopSecretValue42xyz"
RETRY_LINE = re.compile(r"retrying (HEAD|GET|PUT|LIST|DELETE) (\S+) \((\d)/6\) in \d+\.\d s: (.+)")


def mqtier(*args: str, timeout: float = 60) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, seconds) of a real ``mqtier`` process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTIER_", "AWS_"))}
    env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_DEFAULT_REGION="us-east-1")
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "mqtier", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    return res.returncode, res.stdout, res.stderr, time.monotonic() - t0


def s3_args(endpoint: str, bucket: str = "bkt") -> list[str]:
    return [
        "--cold",
        f"s3://{bucket}/cold",
        "-o",
        f"client_kwargs.endpoint_url={endpoint}",
        "-o",
        "client_kwargs.region_name=us-east-1",
        "-o",
        f"secret={SECRET}",
        "-o",
        "key=AKIAEXAMPLEKEY",
    ]


@pytest.fixture
def closed_port() -> str:
    """``http://127.0.0.1:<port>`` where nothing listens: every connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts every connection and never answers a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


class _Busy(BaseHTTPRequestHandler):
    """Answers every request 503 Service Unavailable, as an overloaded S3 endpoint does."""

    def _answer(self) -> None:
        body = b"<Error><Code>ServiceUnavailable</Code><Message>busy</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def busy_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def retry_lines(stderr: str) -> list[tuple[str, str, int, str]]:
    out = []
    for line in stderr.splitlines():
        m = RETRY_LINE.fullmatch(line.strip())
        if m:
            out.append((m.group(1), m.group(2), int(m.group(3)), m.group(4)))
    return out


def test_each_retry_of_a_refused_endpoint_is_a_line_on_stderr(closed_port: str) -> None:
    code, out, err, seconds = mqtier("offsets", *s3_args(closed_port), "--broker", "b")
    assert code == 14, err
    lines = retry_lines(err)
    assert [n for _, _, n, _ in lines] == [2, 3, 4, 5, 6], err
    assert all(reason == "connection refused" for _, _, _, reason in lines), err
    assert err.strip().splitlines()[-1].startswith("error: "), err
    assert SECRET not in err and SECRET not in out
    # Only our six attempts and their backoff (at most 6.2 s); it was 45 s before.
    assert seconds < 25, seconds


def test_one_attempt_against_a_refused_endpoint_is_one_request(closed_port: str) -> None:
    """botocore (4 retries, ~6 s of backoff) and s3fs (more) no longer retry beneath us."""
    store = raw_cold_store(
        "s3://bkt/cold",
        {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": closed_port}},
    )
    t0 = time.monotonic()
    with pytest.raises(Exception, match="Could not connect") as info:
        store.check_root(may_create=False)
    assert not isinstance(info.value, ColdStoreError)  # the raw backend: no retries of ours
    assert time.monotonic() - t0 < 3


def test_timeout_bounds_a_command_against_a_silent_server(silent_server: str) -> None:
    code, _, err, seconds = mqtier(
        "offsets", *s3_args(silent_server), "--broker", "b", "--timeout", "2s"
    )
    assert code == 14, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "--timeout 2s" in last, err
    # Without --timeout each of six attempts waits 15 s for an answer. With it: the limit,
    # plus the interpreter's start-up, with a wide margin for a busy machine.
    assert seconds < 9, seconds


def test_a_busy_endpoint_is_named_by_its_http_status(busy_server: str) -> None:
    code, _, err, seconds = mqtier(
        "offsets", *s3_args(busy_server), "--broker", "b", "--timeout", "3s"
    )
    assert code == 14, err
    lines = retry_lines(err)
    assert lines and all(r == "HTTP 503" for _, _, _, r in lines), err
    # Full jitter makes the waits random: the limit reached first ends it, and is named.
    last = err.strip().splitlines()[-1]
    assert "--timeout 3s" in last or "failed after 6 attempts" in last, err
    assert seconds < 10, seconds


runner = CliRunner()


@pytest.mark.parametrize("value", ["soon", "0", "-1s", "5x"])
def test_a_bad_timeout_is_a_usage_error(tmp_path: Path, value: str) -> None:
    res = runner.invoke(app, ["offsets", "--cold", str(tmp_path), "--timeout", value])
    assert res.exit_code == 2, res.output
    assert "--timeout" in res.output


def test_the_config_file_sets_a_default_timeout(tmp_path: Path, silent_server: str) -> None:
    config = tmp_path / "mqtier.toml"
    config.write_text('[cold]\ntimeout = "1500ms"\n')
    code, _, err, seconds = mqtier(
        "--config", str(config), "offsets", *s3_args(silent_server), "--broker", "b"
    )
    assert code == 14, err
    assert "[cold] timeout 1500ms" in err, err
    assert seconds < 9, seconds


# ---- a dispatch cut short by --timeout leaves the tier whole ----------------------------------

PUT_DELAY_S = 0.6


@pytest.fixture
def slow_puts() -> Iterator[tuple[str, str]]:
    """(slow endpoint, direct endpoint): moto's S3 server, and a proxy to it that holds every
    PUT for 0.6 s, so that a dispatch's uploads outlast its --timeout while the catalog loads
    at full speed."""
    with start_moto_server() as direct:
        host, port = direct.removeprefix("http://").split(":")
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.2)
        stop = threading.Event()
        opened: list[socket.socket] = []

        def pump(src: socket.socket, dst: socket.socket, slow: bool) -> None:
            try:
                while data := src.recv(1 << 16):
                    if slow and data.startswith(b"PUT "):
                        time.sleep(PUT_DELAY_S)
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        def serve() -> None:
            while not stop.is_set():
                try:
                    client = listener.accept()[0]
                except OSError:
                    continue
                upstream = socket.create_connection((host, int(port)))
                opened.extend((client, upstream))
                threading.Thread(target=pump, args=(client, upstream, True), daemon=True).start()
                threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{listener.getsockname()[1]}", direct
        finally:
            stop.set()
            thread.join()
            listener.close()
            for s in opened:
                s.close()


def test_a_dispatch_cut_short_by_its_timeout_leaves_the_catalog_whole(
    tmp_path: Path, slow_puts: tuple[str, str]
) -> None:
    slow, direct = slow_puts
    options = {
        "key": "x",
        "secret": "y",
        "skip_instance_cache": True,
        "client_kwargs": {"endpoint_url": direct, "region_name": "us-east-1"},
    }
    import boto3

    boto3.client(
        "s3", endpoint_url=direct, aws_access_key_id="x", aws_secret_access_key="y",
        region_name="us-east-1",
    ).create_bucket(Bucket="tier")  # fmt: skip
    store = tmp_path / "store"
    bodies = {os.urandom(150).hex().encode() for _ in range(1200)}  # 4 objects of 64K
    with Store.open(store, create=True) as st:
        st.append_batch([Message("t", b, queue_id=0) for b in sorted(bodies)])
        broker = st.config.broker_name
    tiny = ["--force", "--object-size", "64K", "--concurrency", "1"]
    code, _, err, seconds = mqtier(
        "dispatch", "--store", str(store), *s3_args(slow, "tier"), *tiny, "--timeout", "3s"
    )
    assert code == 14, err
    assert "--timeout 3s" in err.strip().splitlines()[-1], err
    assert seconds < 12, seconds
    cold = open_cold_store("s3://tier/cold", options)
    # Cut among its uploads or before them (a busy machine starts slower), never inside its
    # commit: the catalog loads (every record checked) and names only whole commits, and the
    # next run completes the work; the tier then holds every message once.
    before = load_catalog(cold, broker)
    with Store.open(store) as st:
        report = run_dispatch(st, cold, DispatchOptions(force=True), broker=broker)
    assert report.messages + (before.next_offset(("t", 0)) or 0) == 1200
    with ColdReader(cold, broker) as reader:
        got = [m.body for m in reader.read("t", 0, 0, 5000)]
    assert sorted(got) == sorted(bodies)
