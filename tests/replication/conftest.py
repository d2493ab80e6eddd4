"""Fixtures for the replication tests."""

import pytest

from .harness import LocalCluster


@pytest.fixture
def cluster(tmp_path):
    """Three in-process nodes hosting one Raft group, closed after the test."""
    c = LocalCluster(str(tmp_path))
    yield c
    c.close()
