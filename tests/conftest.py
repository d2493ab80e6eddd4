"""Suite-wide collection rules.

The suite runs on two pytest-xdist workers (``addopts`` in pyproject.toml).  The fault scenarios
(marked ``slow``) all go to one worker, one after another: each starts clusters, kills and pauses
nodes and counts on elections finishing within bounds, and two of them at once on two cores
would measure the machine, not the store.  Everything else is spread over both workers.
"""

from __future__ import annotations

import pytest

SERIAL_GROUP = "fault-scenarios"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put every ``slow`` test into one xdist group, so they never run two at a time."""
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group(SERIAL_GROUP))
