"""`bench/cni_add.py`: a tiny run of all three implementations prints its table
and leaves no namespace behind (no timing is asserted), and the bootstrap
interval of its ADD ratio behaves."""

from __future__ import annotations

import importlib.util
import random
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"\d+\.\d+"


def bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cni_add_bench", REPO / "bench" / "cni_add.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_bench_prints_every_implementation_and_cleans_up() -> None:
    before = namespaces()
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "cni_add.py"), "--pods", "4",
                           "--burst", "3", "--rounds", "1"], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("reference", "in-process", "agent"):
        assert re.search(rf"^{name}( +{NUMBER}){{5}}$", proc.stdout, re.M), proc.stdout
    for name in ("in-process", "agent"):
        assert re.search(rf"^ratio {name}/reference: ADD median {NUMBER} \(90 % bootstrap "
                         rf"interval {NUMBER}-{NUMBER}\), DEL median {NUMBER}, burst {NUMBER}$",
                         proc.stdout, re.M), proc.stdout
    assert namespaces() - before == set()


def test_bootstrap_interval_holds_the_ratio_and_narrows_with_pairing() -> None:
    interval = bench_module().median_ratio_interval
    rng = random.Random(3)
    reference = [9.0 + rng.gauss(0, 1) for _ in range(60)]
    # Ours tracks the reference's drift, 10 % faster, plus noise of its own.
    ours = [0.9 * r + rng.gauss(0, 0.2) for r in reference]
    low, high = interval(ours, reference)
    assert low < 0.9 < high and high - low < 0.1
    # Identical samples: no doubt at all.
    assert interval(reference, reference) == (1.0, 1.0)
    # Unrelated, noisier samples: a wider interval around their ratio.
    other = [9.0 + rng.gauss(0, 3) for _ in range(60)]
    wide_low, wide_high = interval(other, reference)
    assert wide_high - wide_low > high - low
    assert wide_low < 1.0 < wide_high
