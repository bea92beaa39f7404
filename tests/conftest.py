"""Shared fixtures: tiny store geometry, and the real RocketMQ store files from ../shared."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from mqtier import Store, StoreConfig
from tests.geometry import TINY

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

ROOT = Path(__file__).resolve().parent.parent


def rocketmq_fixtures_dir() -> Path:
    """``$MQTIER_FIXTURES`` or ``../shared/fixtures/rocketmq`` beside the project root."""
    env = os.environ.get("MQTIER_FIXTURES")
    return Path(env) if env else ROOT.parent / "shared" / "fixtures" / "rocketmq"


def _require_fixture(name: str) -> Path:
    path = rocketmq_fixtures_dir() / name
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"RocketMQ fixture {path} is missing; CI must have ../shared")
        pytest.skip(f"RocketMQ fixture {path} not found (set MQTIER_FIXTURES to run these tests)")
    return path


def _tree_digest(root: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    } | {str(p.relative_to(root)): (p.stat().st_mode, "") for p in root.rglob("*") if p.is_dir()}


@pytest.fixture(scope="session", autouse=True)
def _fixtures_stay_untouched() -> Iterator[None]:
    """Fail the run if anything wrote into the shared RocketMQ fixtures (tests must copy them)."""
    root = rocketmq_fixtures_dir()
    if not root.is_dir():
        yield
        return
    before = _tree_digest(root)
    yield
    after = _tree_digest(root)
    changed = sorted(set(before) ^ set(after) | {k for k in before if after.get(k) != before[k]})
    assert not changed, f"tests modified the shared fixtures in {root}: {changed[:10]}"


@pytest.fixture
def fixture_store_b_src() -> Path:
    """The read-only original of fixture store-b (never open a Store on it directly)."""
    return _require_fixture("store-b")


@pytest.fixture
def fixture_store_c_src() -> Path:
    return _require_fixture("store-c")


def copy_fixture(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in [dst, *dst.rglob("*")]:  # the originals are read-only
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


@pytest.fixture
def store_b(fixture_store_b_src: Path, tmp_path: Path) -> Path:
    """A writable copy of fixture store-b in a temporary directory."""
    return copy_fixture(fixture_store_b_src, tmp_path / "store-b")


@pytest.fixture
def store_c(fixture_store_c_src: Path, tmp_path: Path) -> Path:
    return copy_fixture(fixture_store_c_src, tmp_path / "store-c")


@pytest.fixture
def tiny_config() -> StoreConfig:
    """Small files so tests roll commit-log, consume-queue and index files quickly."""
    return TINY


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_path: Path, tiny_config: StoreConfig) -> Iterator[Store]:
    st = Store.open(store_path, create=True, config=tiny_config)
    try:
        yield st
    finally:
        st.close()
