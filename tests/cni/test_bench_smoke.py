"""`bench/cni_add.py`: a tiny run of every implementation prints both tables
(the shipped configuration against flannel's, the bench configuration against
the reference) and the pod-count line, and leaves no namespace behind (no
timing is asserted); the bootstrap interval of its ratios behaves."""

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
                           "--burst", "3", "--rounds", "1", "--existing", "3", "--settle", "0"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shipped, _, bench = proc.stdout.partition("\nbench configuration")
    assert "shipped configuration" in shipped and bench, proc.stdout
    for name in ("flannel", "agent", "in-process"):
        assert re.search(rf"^{name}( +{NUMBER}){{5}}$", shipped, re.M), proc.stdout
    for name in ("reference", "agent"):
        assert re.search(rf"^{name}( +{NUMBER}){{5}}$", bench, re.M), proc.stdout
    ratio = (rf"ADD median {NUMBER} \(90 % bootstrap interval {NUMBER}-{NUMBER}\), "
             rf"DEL median {NUMBER} \({NUMBER}-{NUMBER}\), burst {NUMBER}$")
    for name in ("agent", "in-process"):
        assert re.search(rf"^ratio {name}/flannel: {ratio}", shipped, re.M), proc.stdout
    assert re.search(rf"^ratio agent/reference \(bench configuration\): {ratio}", bench,
                     re.M), proc.stdout
    for name in ("flannel", "agent"):
        assert re.search(rf"^{name}: ADD median with 0 other pods on the node {NUMBER} ms, "
                         rf"with 3 {NUMBER} ms \(ratio {NUMBER}\)$", shipped, re.M), proc.stdout
    # Other runs on the machine make namespaces of their own meanwhile: only the
    # bench's (sk, its tag, an implementation's first four letters) count.
    assert {n for n in namespaces() - before
            if n[6:10] in ("flan", "agen", "in-p", "refe", "bc-a")} == set()


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
