"""The one-machine demo: node namespaces on an underlay, `skein-agent` on each,
pods wired by `skein`, VXLAN between the nodes, and a reachability table.

Run as root: `python3 -m cni_plugin.lab.demo [--nodes 3] [--pods 2]`.
Everything it creates lives in namespaces named with a random tag and is
removed on exit, on Ctrl-C and on SIGTERM.
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
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3, help="node namespaces (default 3)")
    parser.add_argument("--pods", type=int, default=2, help="pods per node (default 2)")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, through the Lab's context manager.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    with Lab(nodes=args.nodes) as lab:
        _say(f"lab {lab.tag}: underlay bridge in namespace {lab.underlay.name}")
        for node in lab.nodes.values():
            _say(f"{node.name}: namespace {node.ns.name}, eth0 {node.underlay_ip}, "
                 f"pod subnet {node.pod_cidr}")
        lab.start_agents()
        _say("skein-agent running on every node; conflists written, VXLAN peers programmed")
        pods = []
        for node in lab.nodes.values():
            for i in range(args.pods):
                start = time.monotonic()
                pod = lab.add_pod(node, f"p{i + 1}")
                _say(f"{node.name}/{pod.name}: {pod.address()} via "
                     f"{pod.result['interfaces'][1]['name']} -> cni0 "
                     f"(CNI ADD {1000 * (time.monotonic() - start):.0f} ms)")
                pods.append(pod)
        _say("checking every pod against every other pod (ping, then TCP)")
        print(f"\n{'from':12} {'to':12} {'path':8} {'ping':5} TCP source seen")
        failed = False
        for src in pods:
            for dst in pods:
                if src is dst:
                    continue
                ok = ping(src.ns, dst.address())
                try:
                    seen = tcp_source_seen(dst.ns, dst.address(), src.ns, dst.address())
                except RuntimeError:
                    seen, ok = "FAILED", False
                failed |= not ok or seen != src.address()
                path = "bridge" if src.node is dst.node else "vxlan"
                print(f"{src.node.name + '/' + src.name:12} {dst.node.name + '/' + dst.name:12} "
                      f"{path:8} {'ok' if ok else 'FAIL':5} {seen}"
                      f"{'' if seen == src.address() else '  (NAT!)'}")
        tag = lab.tag
    _say(f"cleaned up; leftover namespaces: {leftovers(tag) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
