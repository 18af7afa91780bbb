"""Failure reports of the lab tests carry the speakers' logs (the same hook as tests/l2)."""

from tests.l2.conftest import pytest_runtest_makereport

__all__ = ["pytest_runtest_makereport"]
