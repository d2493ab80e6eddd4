"""Fixtures shared by the unit tests."""

import pytest

from raftkv.storage.leveldb import ShardStore


@pytest.fixture
def store(tmp_path):
    """An empty replica store with a LevelDB of its own, closed after the test."""
    s = ShardStore(str(tmp_path / "store"))
    yield s
    s.close()
