"""The README's main command: the one-machine lab runs end to end, its table
says every check passed, its picture passes the picture checks, and nothing of it
remains afterwards; with --keep it stays up to be explored with skeinctl until
`skein-lab down` removes it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from lab.cluster import scripts_dir
from lab.netns import NETNS_DIR
from speaker.status.diagram import draw
from speaker.status.model import from_json
from speaker.status.output import laid_out
from tests.status.picture import layout_problems, svg_problems


def _our_namespaces() -> set[str]:
    return {n for n in os.listdir(NETNS_DIR) if n.startswith("sk")} \
        if os.path.isdir(NETNS_DIR) else set()


def _our_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if ("skein-" in line or "bird -f" in line) and "pytest" not in line]


def test_lab_demo_end_to_end(tmp_path):
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
    # ClusterIPs reach some node's p1; a NodePort on node2 its own p1 (policy Local).
    assert [r["address"] for r in report["cluster_ips"]] == ["10.96.0.20", "10.96.0.21"]
    assert all(r["answered_by"].endswith("/p1") for r in report["cluster_ips"])
    assert [r["answered_by"] for r in report["node_ports"]] == ["node2/p1", "node2/p1"]
    # The table the user reads says the same.
    assert "Pod to pod: 30/30" in proc.stdout
    assert "10.96.0.20    answered by node" in proc.stdout
    # The picture: one labelled tunnel per node pair, every legend entry used and every
    # colour explained, no text out of its box or on another.
    shown = from_json(report["status"])
    assert {s.key for s in shown.services} == {"default/web-l2", "default/web-bgp"}
    assert [c.address for c in shown.clients] == ["10.98.0.2"]
    assert svg_problems(diagram.read_bytes(), shown) == []
    assert layout_problems(laid_out(draw(shown))) == []
    # Nothing of this lab is left (other labs may come and go meanwhile).
    tag = re.search(r"lab ([0-9a-f]{4}):", proc.stdout).group(1)  # type: ignore[union-attr]
    assert report["leftover_namespaces"] == []
    assert not any(n.startswith(f"sk{tag}") for n in _our_namespaces())
    assert not any(f"skein-lab-{tag}-" in p for p in _our_processes())


def test_demo_keep_then_explore_then_down(tmp_path):
    """`skein-lab demo --keep`: the lab stays, the printed commands work (skeinctl over
    the kept lab, a client in the lab's client namespace), `skein-lab down` removes
    every namespace and process of it."""
    lab_cmd = os.path.join(scripts_dir(), "skein-lab")
    tag = "none"
    try:
        proc = subprocess.run([lab_cmd, "demo", "--keep", "--diagram", ""],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "The lab keeps running." in proc.stdout and "skein-lab down" in proc.stdout
        env_file = "/var/tmp/skein-lab/demo/env"
        # The commands the demo printed, as a user pastes them.
        script = (f". {env_file}\n"
                  '"$SKEINCTL" status --lab-manifests "$LAB_MANIFESTS"\n'
                  '"$SKEINCTL" diagram --lab-manifests "$LAB_MANIFESTS" '
                  f"{tmp_path / 'kept.svg'}\n"
                  'ip netns exec "$CLIENT_NETNS" bash -c "cat < /dev/tcp/$LB_WEB_BGP/80"\n')
        explored = subprocess.run(["bash", "-ec", script], capture_output=True, text=True,
                                  timeout=300)
        assert explored.returncode == 0, explored.stdout + explored.stderr
        assert "default/web-l2   LoadBalancer" in explored.stdout
        assert "kube-proxy: iptables, 6 Service addresses of 2 Services" in explored.stdout
        assert explored.stdout.rstrip().splitlines()[-1].endswith("/p1")
        assert (tmp_path / "kept.svg").stat().st_size > 0
        tag = next(line.split("=", 1)[1].strip() for line in open(env_file, encoding="utf-8")
                   if line.startswith("LAB_TAG="))
        assert any(n.startswith(f"sk{tag}") for n in _our_namespaces())
    finally:
        down = subprocess.run([lab_cmd, "down"], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(n.startswith(f"sk{tag}") for n in _our_namespaces())
    assert not any("skein-lab/demo/" in p for p in _our_processes())
    assert not os.path.exists("/var/tmp/skein-lab/demo")
