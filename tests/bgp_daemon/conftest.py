"""The BGP lab fixture; failure reports carry the speakers' logs (the same report
hook as tests/l2, which tells the fixture whether the test failed)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.bgp_daemon.lab import BgpLab, bgp_lab
from tests.l2.conftest import pytest_runtest_makereport

__all__ = ["lab", "pytest_runtest_makereport"]


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[BgpLab]:
    with bgp_lab() as made:
        yield made
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(made.logs(), file=sys.stderr)
