"""Failure reports of the API lab tests carry the speakers' logs (the hook is tests/l2's)."""

from tests.l2.conftest import pytest_runtest_makereport  # noqa: F401 - a pytest hook
