"""The README's main command: the one-machine lab runs end to end, its table
says every check passed, and nothing of it remains afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from lab.netns import NETNS_DIR


def _our_namespaces() -> set[str]:
    return {n for n in os.listdir(NETNS_DIR) if n.startswith("sk")} \
        if os.path.isdir(NETNS_DIR) else set()


def _our_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if ("skein-" in line or "bird -f" in line) and "pytest" not in line]


def test_lab_demo_end_to_end(tmp_path):
    before_ns, before_procs = _our_namespaces(), set(_our_processes())
    report_path = tmp_path / "report.json"
    diagram = tmp_path / "lab.svg"
    proc = subprocess.run([sys.executable, "-m", "lab.demo", "--report",
                           str(report_path), "--diagram", str(diagram)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    matrix = report["pod_to_pod"]
    assert len(matrix) == 30 and all(r["ok"] for r in matrix)
    assert sum(r["path"] == "vxlan" for r in matrix) == 24
    services = {r["service"]: r for r in report["services"]}
    assert services["web-l2"]["mode"] == "L2" and services["web-l2"]["owner"].startswith("node")
    assert services["web-l2"]["answered_by"].startswith(services["web-l2"]["owner"] + "/")
    assert services["web-bgp"]["owner"] == "node1, node2, node3"
    assert services["web-bgp"]["answered_by"].split("/")[0] in ("node1", "node2", "node3")
    assert services["web-bgp"]["address"] in report["bird_routes"]
    # The table the user reads says the same.
    assert "Pod to pod: 30/30" in proc.stdout
    assert diagram.stat().st_size > 0
    assert report["leftover_namespaces"] == []
    assert _our_namespaces() <= before_ns
    assert set(_our_processes()) <= before_procs
