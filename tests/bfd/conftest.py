"""The namespace lab of tests/bgp (router with BIRD's bridge, three nodes), and a
directory FRR's daemons (running as the frr user) can write to."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bgp.conftest import lab

__all__ = ["frr_dir", "lab"]


@pytest.fixture
def frr_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="skein-frr-"))
    try:
        shutil.chown(directory, "frr", "frr")
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
