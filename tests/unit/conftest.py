"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.eventlog import week, write_log


@pytest.fixture
def logs(tmp_path) -> Path:
    """A log directory with a week of varied records, written as the proxy writes them."""
    return write_log(tmp_path, week())
