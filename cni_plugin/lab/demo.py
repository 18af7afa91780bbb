"""The one-machine demo: a node namespace, two pods wired by `skein`, a ping.

Run as root: `python3 -m cni_plugin.lab.demo`.  Everything it creates lives
in namespaces named with a random tag and is removed on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from cni_plugin.lab.cluster import Lab, leftovers
from cni_plugin.lab.traffic import ping, tcp_source_seen


def _say(step: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {step}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=2, help="pods to create (default 2)")
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM both unwind through the Lab's context manager.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    with Lab(nodes=1) as lab:
        node = lab.nodes["node1"]
        _say(f"node {node.name}: namespace {node.ns.name}, underlay {node.underlay_ip}, "
             f"pod subnet {node.pod_cidr}")
        lab.write_conflist(node)
        pods = []
        for i in range(args.pods):
            start = time.monotonic()
            pod = lab.add_pod(node, f"pod{i + 1}")
            _say(f"pod {pod.name}: {pod.address()} on {pod.result['interfaces'][1]['name']} "
                 f"-> cni0 (CNI ADD {1000 * (time.monotonic() - start):.0f} ms)")
            pods.append(pod)
        rows = []
        for src in pods:
            for dst in pods:
                if src is dst:
                    continue
                ok = ping(src.ns, dst.address())
                seen = tcp_source_seen(dst.ns, dst.address(), src.ns, dst.address())
                rows.append((src.name, dst.name, ok, seen))
        print(f"\n{'from':8} {'to':8} {'ping':6} TCP source seen")
        for src_name, dst_name, ok, seen in rows:
            print(f"{src_name:8} {dst_name:8} {'ok' if ok else 'FAIL':6} {seen}")
        failed = not all(ok for *_, ok, _ in rows)
        tag = lab.tag
    _say(f"cleaned up; leftover namespaces: {leftovers(tag) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
