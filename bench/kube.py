"""Pod start-up in a real cluster: Skein against flannel's reference CNI, same nodes, same run.

    python3 bench/kube.py [--workdir DIR] [--pods 30] [--deployment 100] [--rounds 2]

Against the kube lab that `skein-lab kube up` started in DIR (or, with `--up`,
one it starts and removes).  Two measurements, each for both configurations:

- pod create to Running, one pod at a time (pinned to the nodes in turn): median;
- a Deployment of N pods, create to all Running.

"reference" is flannel's configuration (its `cbr0` delegate: the Go `bridge` and
`host-local` plugins, hairpinMode, isDefaultGateway, ipMasq off, portmap chained)
installed on the same nodes: its conflist goes into every node's
/etc/cni/net.d ahead of Skein's, so containerd takes it for new pods, and out
again for Skein's turns.  The two alternate (A B B A ...) so drift hits both.
The time of a pod is what a user waits for: from the API call that creates it to
the watch event that shows it Running, taken inside the lab's network namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.kube.cluster import DEFAULT_WORKDIR, KubeLab  # noqa: E402
from lab.kube.image import BUSYBOX_IMAGE  # noqa: E402

NS = "bench"
REFERENCE_CONF = "00-flannel-reference.conflist"
REFERENCE_PLUGINS = ("bridge", "host-local")
SKEIN, REFERENCE = "skein", "reference"


def reference_conflist(pod_cidr: str, mtu: int) -> dict[str, Any]:
    """flannel's delegate as flanneld writes it for a node (subnet.env -> cbr0).
    Its addresses come from the top of the node's subnet so that they never meet
    Skein's pods of the other turns."""
    prefix = pod_cidr.rsplit(".", 1)[0]
    return {"cniVersion": "1.0.0", "name": "cbr0", "plugins": [
        {"type": "bridge", "name": "cbr0", "bridge": "cni0", "mtu": mtu, "hairpinMode": True,
         "isGateway": True, "isDefaultGateway": True, "ipMasq": False,
         "ipam": {"type": "host-local", "ranges": [[{
             "subnet": pod_cidr, "rangeStart": f"{prefix}.130", "rangeEnd": f"{prefix}.254"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}]}


class Bench:
    def __init__(self, lab: KubeLab) -> None:
        from kubernetes import client, config

        self.lab = lab
        config.load_kube_config(str(lab.kubeconfig))
        self.core = client.CoreV1Api()
        self.apps = client.AppsV1Api()
        self.nodes = [n.metadata.name for n in self.core.list_node().items]

    # -- switching the node's CNI --------------------------------------------------
    def install_reference(self) -> None:
        for spec in self.lab.node_specs():
            for plugin in REFERENCE_PLUGINS:
                proc = self.lab.in_node(spec, "cp", f"/usr/lib/cni/{plugin}", "/opt/cni/bin/")
                if proc.returncode:
                    raise SystemExit(f"cannot install the reference {plugin} on {spec.name}: "
                                     f"{proc.stderr.strip()} (apt-get install "
                                     "containernetworking-plugins)")

    def use(self, which: str) -> None:
        for spec in self.lab.node_specs():
            path = spec.workdir / "cni-conf" / REFERENCE_CONF
            if which == REFERENCE:
                node = self.core.read_node(spec.name)
                skein = json.loads((spec.workdir / "cni-conf" / "10-skein.conflist").read_text())
                mtu = int(skein["plugins"][0].get("mtu", 1450))
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(reference_conflist(node.spec.pod_cidr, mtu)))
                os.replace(tmp, path)
            else:
                path.unlink(missing_ok=True)
        # containerd reloads its CNI config on a change of the directory.
        time.sleep(2)

    # -- measurements -------------------------------------------------------------
    @staticmethod
    def pod_spec() -> dict[str, Any]:
        return {"terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                "command": ["sleep", "100000"]}]}

    def wait_running(self, selector: str, count: int, since: float,
                     timeout: float = 600) -> tuple[float, list[str]]:
        """Seconds from `since` until `count` pods of `selector` are Running, and their IPs."""
        from kubernetes import watch

        running: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        # A watch may end early (the API server closes it, a connection drops): a
        # new one starts from a fresh list, which holds every pod seen so far.
        while time.monotonic() < deadline:
            w = watch.Watch()
            for event in w.stream(self.core.list_namespaced_pod, NS, label_selector=selector,
                                  timeout_seconds=max(1, int(deadline - time.monotonic()))):
                pod = event["object"]
                if pod.status.phase == "Running" and pod.status.pod_ip:
                    running[pod.metadata.name] = pod.status.pod_ip
                if len(running) >= count:
                    w.stop()
                    return time.monotonic() - since, list(running.values())
        raise SystemExit(f"timed out: {len(running)}/{count} pods Running ({selector})")

    def clean(self) -> None:
        self.core.delete_collection_namespaced_pod(NS, grace_period_seconds=0)
        for d in self.apps.list_namespaced_deployment(NS).items:
            self.apps.delete_namespaced_deployment(d.metadata.name, NS)
        deadline = time.monotonic() + 300
        while self.core.list_namespaced_pod(NS).items:
            if time.monotonic() > deadline:
                raise SystemExit("bench pods did not go away in 300 s")
            time.sleep(0.5)

    def one_at_a_time(self, which: str, count: int, offset: int) -> list[float]:
        times = []
        for i in range(count):
            name = f"{which[:3]}-{offset + i}"
            node = self.nodes[i % len(self.nodes)]
            body = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": {"app": "bench", "one": name}},
                    "spec": self.pod_spec() | {"nodeName": node}}
            start = time.monotonic()
            self.core.create_namespaced_pod(NS, body)
            took, _ = self.wait_running(f"one={name}", 1, start)
            times.append(took)
        self.clean()
        return times

    def deployment(self, which: str, replicas: int) -> float:
        body = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": f"{which}-deploy"},
                "spec": {"replicas": replicas,
                         "selector": {"matchLabels": {"app": "bench", "set": which}},
                         "template": {"metadata": {"labels": {"app": "bench", "set": which}},
                                      "spec": self.pod_spec()}}}
        start = time.monotonic()
        self.apps.create_namespaced_deployment(NS, body)
        took, ips = self.wait_running(f"app=bench,set={which}", replicas, start)
        if len(set(ips)) != replicas:
            raise SystemExit(f"{which}: {replicas} pods got only {len(set(ips))} addresses")
        self.clean()
        return took


def inner(args: argparse.Namespace) -> int:
    lab = KubeLab(args.workdir)
    bench = Bench(lab)
    from kubernetes import client

    try:
        bench.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    bench.clean()
    bench.install_reference()
    singles: dict[str, list[float]] = {SKEIN: [], REFERENCE: []}
    deploys: dict[str, list[float]] = {SKEIN: [], REFERENCE: []}
    order = [SKEIN, REFERENCE, REFERENCE, SKEIN] * ((args.rounds + 1) // 2)
    order = order[:2 * args.rounds]
    per_turn = max(1, args.pods // args.rounds)
    try:
        for turn, which in enumerate(order):
            bench.use(which)
            singles[which] += bench.one_at_a_time(which, per_turn, turn * per_turn)
            deploys[which].append(bench.deployment(which, args.deployment))
            print(f"turn {turn + 1}/{len(order)} ({which}): pod median "
                  f"{statistics.median(singles[which]) * 1000:.0f} ms, deployment of "
                  f"{args.deployment} {deploys[which][-1]:.1f} s", flush=True)
    finally:
        bench.use(SKEIN)
        bench.clean()
    s, r = statistics.median(singles[SKEIN]), statistics.median(singles[REFERENCE])
    ds, dr = statistics.median(deploys[SKEIN]), statistics.median(deploys[REFERENCE])
    print(f"\npod create -> Running, one at a time (median of {len(singles[SKEIN])}):")
    print(f"  skein {s * 1000:.0f} ms   reference {r * 1000:.0f} ms   ratio {s / r:.2f}")
    print(f"Deployment of {args.deployment} -> all Running (median of {len(deploys[SKEIN])}):")
    print(f"  skein {ds:.1f} s   reference {dr:.1f} s   ratio {ds / dr:.2f}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--pods", type=int, default=30, help="single pods per configuration")
    p.add_argument("--deployment", type=int, default=100, help="replicas of the Deployment")
    p.add_argument("--rounds", type=int, default=2, help="turns per configuration")
    p.add_argument("--up", action="store_true", help="start a kube lab first, remove it after")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        return inner(args)
    lab = KubeLab(args.workdir)
    started = False
    if lab.state is None:
        if not args.up:
            raise SystemExit(f"no kube lab in {args.workdir}: `skein-lab kube up` or --up")
        from lab.kube.build import ensure_kubernetes
        from lab.kube.image import ensure_images

        bin_dir = ensure_kubernetes()
        lab.up(ensure_images(bin_dir=bin_dir), bin_dir)
        started = True
    try:
        # Every client of a lab address runs inside the lab.
        argv = ["ip", "netns", "exec", lab.cp_ns.name, sys.executable, __file__, "--inner",
                "--workdir", str(args.workdir), "--pods", str(args.pods),
                "--deployment", str(args.deployment), "--rounds", str(args.rounds)]
        return subprocess.call(argv)
    finally:
        if started:
            lab.down()


if __name__ == "__main__":
    sys.exit(main())
