#!/usr/bin/env python3
"""Pod ADD/DEL wall time: Skein against the reference Go plugins, same run.

For each implementation, N pods are added one after the other and then
deleted, on the same network config (only `type` and `ipam.type` differ), in
a fresh node namespace each:

  reference   /usr/lib/cni/bridge  + host-local
  ours        skein                + skein-ipam   (in-process, no agent)

Prints median and p90 of ADD and DEL in milliseconds and the ratio
ours/reference.  Run as root: `python3 bench/cni_add.py [--pods 30]`.
Everything lives in namespaces named with a random tag and is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cni_plugin.lab.cluster import REFERENCE_CNI_DIR, scripts_dir  # noqa: E402
from cni_plugin.lab.netns import Netns, new_tag  # noqa: E402


def config(plugin: str, ipam: str, data_dir: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "bench", "type": plugin, "bridge": "cni0",
            "isGateway": True, "isDefaultGateway": True, "ipMasq": False,
            "ipam": {"type": ipam, "ranges": [[{"subnet": "10.88.0.0/16"}]],
                     "dataDir": data_dir}}


def timed_call(node: Netns, binary: str, command: str, conf: dict[str, Any],
               container_id: str, netns: str, cni_path: str) -> float:
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
           "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": cni_path}
    # Enter the node namespace first (ip netns exec), then time only the plugin.
    start = time.perf_counter()
    proc = subprocess.run(node.exec_argv([binary]), input=json.dumps(conf).encode(), env=env,
                          capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{binary} {command} failed: {proc.stdout.decode()}")
    return elapsed


def baseline(node: Netns) -> float:
    """The cost of `ip netns exec NODE true`, subtracted from every sample."""
    samples = []
    for _ in range(10):
        start = time.perf_counter()
        subprocess.run(node.exec_argv(["true"]), check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run(label: str, plugin_binary: str, ipam: str, pods: int, tag: str, cni_path: str
        ) -> dict[str, list[float]]:
    node = Netns(f"sk{tag}{label[0]}n").create()
    pod_ns = [Netns(f"sk{tag}{label[0]}{i}").create() for i in range(pods)]
    data_dir = tempfile.mkdtemp(prefix="skein-bench-")
    conf = config(os.path.basename(plugin_binary), ipam, data_dir)
    try:
        overhead = baseline(node)
        adds = [timed_call(node, plugin_binary, "ADD", conf, f"c{i}", ns.path, cni_path)
                - overhead for i, ns in enumerate(pod_ns)]
        dels = [timed_call(node, plugin_binary, "DEL", conf, f"c{i}", ns.path, cni_path)
                - overhead for i, ns in enumerate(pod_ns)]
        return {"add": adds, "del": dels}
    finally:
        for ns in pod_ns:
            ns.delete()
        node.delete()
        subprocess.run(["rm", "-rf", data_dir], check=False)


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) >= 2 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=30)
    args = parser.parse_args()
    tag = new_tag()
    ours_dir = scripts_dir()
    cni_path = f"{ours_dir}:{REFERENCE_CNI_DIR}"
    results = {
        "reference": run("ref", os.path.join(REFERENCE_CNI_DIR, "bridge"), "host-local",
                         args.pods, tag, cni_path),
        "ours": run("ours", os.path.join(ours_dir, "skein"), "skein-ipam", args.pods, tag,
                    cni_path),
    }
    print(f"{args.pods} pods, sequential; milliseconds per call "
          "(ip netns exec overhead subtracted)")
    print(f"{'':12} {'ADD med':>8} {'ADD p90':>8} {'DEL med':>8} {'DEL p90':>8}")
    for name, r in results.items():
        print(f"{name:12} {1000 * statistics.median(r['add']):8.1f} {1000 * p90(r['add']):8.1f} "
              f"{1000 * statistics.median(r['del']):8.1f} {1000 * p90(r['del']):8.1f}")
    ref, ours = results["reference"], results["ours"]
    print(f"ratio ours/reference: ADD median "
          f"{statistics.median(ours['add']) / statistics.median(ref['add']):.2f}, "
          f"DEL median {statistics.median(ours['del']) / statistics.median(ref['del']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
