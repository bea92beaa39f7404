"""Config file lookup and precedence (flag > environment > mqtier.toml > fsspec defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqtier.errors import ConfigError
from mqtier.settings import load_settings, merge_options


def test_no_file_means_empty_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MQTIER_CONFIG", raising=False)
    s = load_settings()
    assert s.source is None and s.cold_url is None and s.storage_options == {}


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mqtier.toml").write_text('[cold]\nurl = "file:///local"\n')
    env = tmp_path / "env.toml"
    env.write_text('[cold]\nurl = "file:///env"\n')
    flag = tmp_path / "flag.toml"
    flag.write_text('[cold]\nurl = "file:///flag"\nbroker = "b"\n')
    monkeypatch.delenv("MQTIER_CONFIG", raising=False)
    assert load_settings().cold_url == "file:///local"
    monkeypatch.setenv("MQTIER_CONFIG", str(env))
    assert load_settings().cold_url == "file:///env"
    assert load_settings(flag).cold_url == "file:///flag"


def test_bad_files_are_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[cold\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_settings(bad)
    bad.write_text("[cold]\nurl = 3\n")
    with pytest.raises(ConfigError, match=r"cold\.url must be a string"):
        load_settings(bad)
    bad.write_text('[cold]\nuri = "x"\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_flags_override_file_options_key_by_key() -> None:
    base = {"key": "a", "client_kwargs": {"endpoint_url": "http://x", "region_name": "r1"}}
    over = {"client_kwargs": {"region_name": "r2"}, "secret": "s"}
    assert merge_options(base, over) == {
        "key": "a",
        "secret": "s",
        "client_kwargs": {"endpoint_url": "http://x", "region_name": "r2"},
    }
