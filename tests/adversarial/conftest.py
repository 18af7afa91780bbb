"""The adversarial tier: what an attacker or a faulty peer tries, and what holds.

Every test reproduces one fault in real network namespaces (or, for the
parsers, feeds them hostile input under a fixed time budget); see the README's
"Adversarial tier".  Fixtures come from the tiers they attack: tests/cni's
`cni` (each CNI test runs in-process and through skein-agent) and tests/l2's
report hook (a failing lab test prints the daemons' logs).
"""

from tests.cni.conftest import cni  # noqa: F401 - a fixture, used by name
from tests.l2.conftest import pytest_runtest_makereport  # noqa: F401 - a pytest hook
