"""``clean`` deletes no hot file whose records' committed cold object is gone or cut short.

A commit record only says the objects it names were uploaded; an object deleted since (by
hand, a lifecycle rule, a bad restore) leaves the hot store holding the only copy of its
messages. Found by review: ``rm`` of one data object, then ``clean --keep 0`` deleted the hot
files, and the messages were lost (``read`` then failed with exit 3).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqtier import Store
from mqtier.backend.base import ColdStore
from mqtier.backend.open import open_cold_store
from mqtier.cli import app
from mqtier.errors import CorruptionError
from mqtier.tier.catalog import load_catalog
from mqtier.tier.clean import clean
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from tests.cold.conftest import BROKER, fill
from tests.geometry import TINY


def _tiered(hot: Store, cold: ColdStore) -> str:
    """900 messages tiered, 300 more only hot; the name of the first committed object."""
    fill(hot, 900)
    run_dispatch(hot, cold, DispatchOptions(force=True))
    fill(hot, 300, start=900)
    state = load_catalog(cold, BROKER)
    return min(state.referenced_objects())


def _files(st: Store) -> list[str]:
    return [f.path.name for f in st.commitlog.files]


def test_intact_objects_are_cleaned(hot: Store, cold: ColdStore) -> None:
    _tiered(hot, cold)
    report = clean(hot, load_catalog(cold, BROKER), keep_ms=0, cold=cold)
    assert report.files


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_lost_object_stops_clean(hot: Store, cold: ColdStore, damage: str, dry_run: bool) -> None:
    key = _tiered(hot, cold)
    if damage == "deleted":
        cold.delete([key])
    else:
        cold.put(key, cold.get(key)[:100])
    before = _files(hot)
    with pytest.raises(CorruptionError, match=f"{key}: committed object is"):
        clean(hot, load_catalog(cold, BROKER), keep_ms=0, dry_run=dry_run, cold=cold)
    assert _files(hot) == before


def test_cli_clean_refuses_with_exit_4_and_deletes_nothing(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'cold'}"
    cold = open_cold_store(url)
    with Store.open(tmp_path / "store", create=True, config=TINY) as hot:
        hot.create_topic("orders", 3)
        key = _tiered(hot, cold)
        before = _files(hot)
    (tmp_path / "cold" / key).unlink()
    res = CliRunner().invoke(
        app,
        ["clean", "--store", str(tmp_path / "store"), "--cold", url, "--keep", "0", "--json"],
        env={"MQTIER_COLD": None, "MQTIER_STORE": None},
    )
    assert res.exit_code == 4, res.stderr
    assert f"{key}: committed object is missing" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    with Store.open(tmp_path / "store") as st:
        assert _files(st) == before
