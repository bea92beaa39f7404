"""Keep secrets out of everything mqtier shows: errors, logs, ``--json`` documents, progress.

A cold-tier URL may carry credentials (``ftp://user:password@host/dir``,
``s3://KEY:SECRET@bucket``, a pre-signed ``?X-Amz-Signature=...``) and a storage option may be
one (``-o secret=...``, ``-o client_kwargs.aws_session_token=...``). Every place that shows a URL
or an option goes through this module:

* :func:`redact_url` for a URL mqtier itself prints (``user:***@``, ``***@``);
* :func:`redact_options` for storage options (the value of every secret-looking name);
* :func:`redact` for free text, such as an exception's message from a backend library: URLs in
  it are redacted, and so is every secret value registered with :func:`remember_secrets` (the
  URLs and options the command was given), wherever it appears.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

MASK = "***"

# Substrings of option or query-parameter names that hold secrets (compared lower-case).
_SECRET_WORDS = (
    "key",
    "secret",
    "token",
    "password",
    "passwd",
    "pwd",
    "credential",
    "session",
    "auth",
    "signature",
    "sig",
    "sas",
    "private",
    "cert",
)
# Protocols whose userinfo is a user name (kept) rather than an access key (hidden too).
_NAMED_USERS = {"ftp", "sftp", "ssh", "http", "https", "smb", "webdav", "hdfs", "webhdfs"}
# Protocols whose userinfo is not a credential at all: Azure's container@account.
_CONTAINER_USERINFO = {"az", "abfs", "abfss", "adl"}
# A URL inside free text: scheme://, then up to the next blank or quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# Shorter values are not masked in free text: "1" or "yes" would garble every message.
_MIN_SECRET_LEN = 4

_known: set[str] = set()
_known_lock = threading.Lock()


def is_secret_name(name: str) -> bool:
    """True for an option or parameter name that looks like it holds a secret."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _userinfo_mask(scheme: str, userinfo: str) -> str:
    user, colon, _password = userinfo.partition(":")
    if scheme in _CONTAINER_USERINFO and not colon:
        return userinfo
    if scheme in _NAMED_USERS and colon:
        return f"{user}:{MASK}"
    return MASK


def _split_userinfo(url: str) -> tuple[str, str, str] | None:
    """(scheme, userinfo, rest after the '@') of ``url``, or None if it has no userinfo.

    Not ``urlsplit``: a secret may hold '/' or '+' (AWS secret keys do), which would end its
    netloc early and leave the rest of the secret in the "path". Everything up to the last '@'
    before any query is taken as userinfo; if a path holds an '@' too, more is masked, not less.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or rest.startswith("/"):  # file:///dir has no authority, so no userinfo
        return None
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    at = head.rfind("@")
    if at < 0:
        return None
    return scheme.lower(), rest[:at], rest[at + 1 :]


def redact_url(url: str) -> str:
    """``url`` with its password (or whole userinfo) and secret query values masked."""
    out = url
    split = _split_userinfo(url)
    if split is not None:
        scheme, userinfo, rest = split
        out = f"{url.partition('://')[0]}://{_userinfo_mask(scheme, userinfo)}@{rest}"
    query = out.partition("?")[2].partition("#")[0]
    if query:
        masked = [
            f"{k}={MASK}" if is_secret_name(k) else f"{k}={v}"
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        out = out.replace(f"?{query}", "?" + "&".join(masked), 1)
    return _mask_known(out)


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of storage options with the value of every secret-looking name masked."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        if is_secret_name(name):
            out[name] = MASK
        elif isinstance(value, Mapping):
            out[name] = redact_options(value)
        else:
            out[name] = value
    return out


def redact(text: str) -> str:
    """Free text with every URL redacted and every remembered secret masked."""
    return _mask_known(_URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text))


def remember_secrets(url: str | None, options: Mapping[str, Any] | None = None) -> None:
    """Note the secrets in ``url`` and ``options`` so that :func:`redact` masks them anywhere.

    A backend library may quote them in its own words ("invalid key 'AKIA...'"), where no
    structure tells us what is a secret; the values themselves can be recognised.
    """
    found: list[str] = []
    split = _split_userinfo(url) if url else None
    if split is not None:
        scheme, userinfo, _rest = split
        user, colon, password = userinfo.partition(":")
        if scheme not in _CONTAINER_USERINFO or colon:
            found.append(password if colon else user)
        if colon and scheme not in _NAMED_USERS:
            found.append(user)  # an access key id is a secret too
    if url and "?" in url:
        query = url.partition("?")[2].partition("#")[0]
        found.extend(v for k, v in parse_qsl(query) if is_secret_name(k))
    found.extend(_secret_values(options or {}))
    with _known_lock:
        _known.update(s for s in found if len(s) >= _MIN_SECRET_LEN)


def _secret_values(options: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in options.items():
        if isinstance(value, Mapping):
            out.extend(_secret_values(value))
        elif is_secret_name(name) and isinstance(value, str | int | float):
            out.append(str(value))
    return out


def _mask_known(text: str) -> str:
    with _known_lock:
        secrets = sorted(_known, key=len, reverse=True)  # longest first: no partial leftovers
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A log filter that passes every record through :func:`redact` (its message is final)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


def redact_logs(handler: logging.Handler | None) -> None:
    """Redact what ``handler`` prints (idempotent); the CLI passes ``logging.lastResort``."""
    if handler is not None and not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
