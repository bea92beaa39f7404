"""Settings from a config file (``mqtier.toml``), for what would be tedious to type each time.

Where the file comes from, first match wins: ``mqtier --config FILE``, ``$MQTIER_CONFIG``,
``./mqtier.toml``. Its content::

    [cold]
    url = "s3://bucket/prefix"          # used when --cold/--to and $MQTIER_COLD are absent
    broker = "broker-a"                 # used without a store when --broker is absent
    timeout = "10m"                     # used when --timeout and $MQTIER_TIMEOUT are absent

    [cold.storage_options]              # fsspec options; --storage-option entries override
    client_kwargs = { endpoint_url = "http://127.0.0.1:9000" }

Precedence for every value: command-line option, then environment variable, then this file,
then fsspec's own defaults (for S3 that includes ``AWS_*`` variables and ``~/.aws``).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqtier.errors import ConfigError

DEFAULT_NAME = "mqtier.toml"


@dataclass(frozen=True)
class Settings:
    source: Path | None = None
    cold_url: str | None = None
    broker: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    timeout: str | None = None


SECTIONS = ("cold",)
COLD_KEYS = ("url", "broker", "storage_options", "timeout")


def _known_keys(path: Path, table: dict[str, Any], section: str, known: tuple[str, ...]) -> None:
    """A misspelt key would be silently ignored (and its setting with it): name the file, the
    section and the key, and the valid key it most resembles."""
    unknown = sorted(set(table) - set(known))
    if not unknown:
        return
    where = f"in [{section}]" if section else "at the top level"
    keys = ", ".join(repr(k) for k in unknown)
    close = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
    hint = next((f"{m[0]} (not {k}) {where} of {path}" for k, m in close.items() if m), None)
    raise ConfigError(
        f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {keys} {where} "
        f"(known: {', '.join(known)})",
        hint=hint,
    )


def find_config(explicit: Path | None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: config file not found")
        return explicit
    env = os.environ.get("MQTIER_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found (from $MQTIER_CONFIG)")
        return path
    local = Path(DEFAULT_NAME)
    return local if local.is_file() else None


def load_settings(explicit: Path | None = None) -> Settings:
    path = find_config(explicit)
    if path is None:
        return Settings()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    _known_keys(path, doc, "", SECTIONS)
    cold = doc.get("cold", {})
    if not isinstance(cold, dict):
        raise ConfigError(f"{path}: [cold] must be a table")
    _known_keys(path, cold, "cold", COLD_KEYS)
    options = cold.get("storage_options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{path}: [cold.storage_options] must be a table")
    for name in ("url", "broker", "timeout"):
        if name in cold and not isinstance(cold[name], str):
            raise ConfigError(f"{path}: cold.{name} must be a string")
    return Settings(path, cold.get("url"), cold.get("broker"), options, cold.get("timeout"))


def merge_options(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` wins; nested tables merge key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_options(out[key], value)
        else:
            out[key] = value
    return out
