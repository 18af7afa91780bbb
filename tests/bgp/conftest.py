"""Fixtures for the interop tests: the namespace lab, its daemons killed at teardown."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.netns import Netns
from tests.bgp.lab import Lab, build_lab


def _need_lab_tools() -> None:
    tools = ("bird", "birdc", "gobgpd", "gobgp", "ip")
    missing = [tool for tool in tools if not shutil.which(tool)]
    if os.geteuid() != 0 or missing:
        pytest.fail(f"interop tests need root and {', '.join(missing) or 'nothing else'}")


@pytest.fixture
def lab(netns_factory: Callable[[str], Netns], tmp_path: Path) -> Iterator[Lab]:
    _need_lab_tools()
    made = build_lab(netns_factory, tmp_path)
    try:
        yield made
    finally:
        made.stop_all()
