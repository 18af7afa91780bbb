"""Skein in a real Kubernetes cluster: what a user sees after `kubectl apply`.

The tests run in file order against one cluster; the node-kill test goes last
in test_zz_failover.py because it takes a node away.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time

from lab.kube.cluster import CLUSTER_CIDR, SKEIN_NAMESPACE, KubeLab
from lab.kube.image import BUSYBOX_IMAGE as BUSYBOX
from lab.kube.workloads import WHOAMI_SERVER, daemonset, documents, lb_service, namespace
from lab.router import ROUTER_ASN
from tests.kube_lab.conftest import (
    apply,
    client_get,
    exec_in,
    running_pods,
    wait_for,
    wait_pods,
)

NS = "lab-tests"

WHOAMI_DS = documents(namespace(NS), daemonset(NS, "whoami", WHOAMI_SERVER))


def seen_address(answer: str) -> str:
    """The client address busybox httpd reports ("[::ffff:10.244.1.3]" on its
    dual-stack socket) as plain text."""
    return answer.strip().strip("[]").removeprefix("::ffff:")


def whoami_pods(kube: KubeLab) -> list[dict]:
    apply(kube, WHOAMI_DS)
    return wait_pods(kube, NS, "app=whoami", len(kube.node_specs()))


def test_nodes_run_skein_without_python(kube: KubeLab) -> None:
    """Every node is Ready through Skein's conflist, although no node has a
    python3: the CNI executables run on the runtime the DaemonSet installed."""
    for node in kube.node_specs():
        proc = kube.in_node(node, "python3", "-c", "pass")
        assert proc.returncode == 127, proc
        conf = kube.in_node(node, "cat", "/etc/cni/net.d/10-skein.conflist")
        conflist = json.loads(conf.stdout)
        assert conflist["cniVersion"] == "1.0.0"
        assert [p["type"] for p in conflist["plugins"]] == ["skein", "portmap"]
        head = kube.in_node(node, "head", "-c", "200", "/opt/cni/bin/skein").stdout
        assert head.startswith("#!/opt/cni/bin/"), head
    pods = kube.kubectl_json("-n", SKEIN_NAMESPACE, "get", "pods")["items"]
    names = {p["metadata"]["name"].rsplit("-", 1)[0] for p in pods}
    assert {"skein-node", "skein-speaker"} <= names


def test_pods_reach_each_other_across_nodes(kube: KubeLab) -> None:
    pods = whoami_pods(kube)
    assert len({p["spec"]["nodeName"] for p in pods}) == len(kube.node_specs())
    cluster = ipaddress.ip_network(CLUSTER_CIDR)
    for src in pods:
        assert ipaddress.ip_address(src["status"]["podIP"]) in cluster
        for dst in pods:
            if dst is src:
                continue
            ip = dst["status"]["podIP"]
            code, out = exec_in(kube, NS, src["metadata"]["name"], "ping", "-c", "2", "-W", "3",
                                ip)
            assert code == 0, f"{src['spec']['nodeName']} -> {dst['spec']['nodeName']}: {out}"
            # (busybox's own -T timeout crashes this static build: timeout(1) instead.)
            code, out = exec_in(kube, NS, src["metadata"]["name"], "timeout", "10", "wget",
                                "-qO-", f"http://{ip}:8080/cgi-bin/ip")
            # TCP, and the server sees the client pod's own address (no NAT inside the cluster).
            assert code == 0 and seen_address(out) == src["status"]["podIP"], out


def test_deployment_of_30_gets_30_addresses_and_frees_them(kube: KubeLab) -> None:
    apply(kube, f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: many
  namespace: {NS}
spec:
  replicas: 30
  selector:
    matchLabels: {{app: many}}
  template:
    metadata:
      labels: {{app: many}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: sleep
        image: {BUSYBOX}
        imagePullPolicy: Never
        command: [sleep, "1000000"]
""")
    pods = wait_pods(kube, NS, "app=many", 30, timeout=300)
    addresses = [p["status"]["podIP"] for p in pods]
    assert len(set(addresses)) == 30
    by_node: dict[str, set[str]] = {}
    for p in pods:
        by_node.setdefault(p["spec"]["nodeName"], set()).add(p["status"]["podIP"])

    def leases(node_name: str) -> set[str]:
        node = next(n for n in kube.node_specs() if n.name == node_name)
        out = kube.in_node(node, "ls", "/var/lib/cni/networks/skein").stdout.split()
        return {name for name in out if name[0].isdigit()}

    for node_name, ips in by_node.items():
        assert ips <= leases(node_name)
    kube.kubectl("-n", NS, "delete", "deployment", "many", "--wait=true", timeout=180)
    wait_for(lambda: not kube.kubectl_json("-n", NS, "get", "pods", "-l", "app=many")["items"],
             180, "the deployment's pods gone")
    for node_name, ips in by_node.items():
        wait_for(lambda n=node_name, i=ips: not (i & leases(n)), 60,
                 f"leases of the deleted pods freed on {node_name}")


def _lb_service(name: str, pool: str) -> str:
    return lb_service(NS, name, pool, "whoami")


def lb_address(kube: KubeLab, name: str) -> str:
    def ingress() -> str | None:
        svc = kube.kubectl_json("-n", NS, "get", "service", name)
        found = svc["status"].get("loadBalancer", {}).get("ingress") or []
        return found[0].get("ip") if found else None

    address: str = wait_for(ingress, 60, f"an address for Service {name}")
    return address


def test_loadbalancer_l2_and_bgp_from_the_client(kube: KubeLab) -> None:
    whoami_pods(kube)
    apply(kube, _lb_service("web-l2", "l2-pool") + "---\n" + _lb_service("web-bgp", "bgp-pool"))
    l2 = lb_address(kube, "web-l2")
    bgp = lb_address(kube, "web-bgp")
    assert ipaddress.ip_address(l2) in ipaddress.ip_network("192.168.56.0/24")
    assert ipaddress.ip_address(bgp) in ipaddress.ip_network("198.51.100.0/24")
    for address in (l2, bgp):
        answer = wait_for(lambda a=address: client_get(kube, f"http://{a}/cgi-bin/ip"), 60,
                          f"the client reaches {address}")
        assert answer
    routes = subprocess.run(["birdc", "-s", str(kube.bird_socket), "show", "route", "for", bgp],
                            capture_output=True, text=True, check=True).stdout
    assert bgp in routes and any(f"via {n.ip} " in routes for n in kube.node_specs()), routes


def skeinctl(kube: KubeLab, pod: str, *argv: str) -> str:
    proc = kube.kubectl("-n", SKEIN_NAMESPACE, "exec", pod, "-c", "skein-agent", "--",
                        "skeinctl", *argv, timeout=60)
    return proc.stdout


def test_skeinctl_through_the_node_pod(kube: KubeLab) -> None:
    """What the README tells an operator: `kubectl exec` into the skein-node pod
    reaches that node's speaker through the hostPath socket."""
    whoami_pods(kube)
    pods = running_pods(kube, SKEIN_NAMESPACE, "app.kubernetes.io/name=skein-node")
    assert len(pods) == len(kube.node_specs())
    for pod in pods:
        node = pod["spec"]["nodeName"]
        reply = json.loads(skeinctl(kube, pod["metadata"]["name"], "-o", "json", "peers"))
        assert reply["node"] == node
        # Every node peers with the lab's BIRD (install/examples/bgp-peer.yaml).
        assert any(p["kind"] == "bgp" and p["state"] == "Established"
                   and p["peer_asn"] == ROUTER_ASN for p in reply["peers"]), reply
        status = json.loads(skeinctl(kube, pod["metadata"]["name"], "status", "-o", "json"))
        assert [n["name"] for n in status["nodes"]] == [node]


def test_the_cluster_picture(kube: KubeLab, tmp_path) -> None:
    """`skein-lab kube diagram`: every node pair one labelled tunnel, every legend
    entry used, no text outside its box, rendered to SVG and PNG."""
    from lab.kube.diagram import write
    from speaker.status.diagram import draw
    from speaker.status.output import laid_out
    from tests.status.picture import layout_problems, svg_problems

    svg, png = tmp_path / "kube.svg", tmp_path / "kube.png"
    shown = write(kube, str(svg), workload=True, log=lambda _line: None)
    write(kube, str(png), workload=False, log=lambda _line: None)
    assert png.read_bytes().startswith(b"\x89PNG")
    assert len(shown.nodes) == len(kube.node_specs())
    assert svg_problems(svg.read_bytes(), shown) == []
    assert layout_problems(laid_out(draw(shown))) == []


def test_hostport_reached_on_the_node_address(kube: KubeLab) -> None:
    node = kube.node_specs()[1]
    apply(kube, f"""apiVersion: v1
kind: Pod
metadata:
  name: hostport
  namespace: {NS}
  labels: {{app: hostport}}
spec:
  nodeName: {node.name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: whoami
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: {json.dumps(WHOAMI_SERVER)}
    ports:
    - containerPort: 8080
      hostPort: 18080
""")
    wait_pods(kube, NS, "app=hostport", 1)
    answer = wait_for(lambda: client_get(kube, f"http://{node.ip}:18080/cgi-bin/ip"), 60,
                      "the client reaches the hostPort")
    assert answer


def test_rolling_restart_keeps_running_pods_connected(kube: KubeLab) -> None:
    pods = whoami_pods(kube)
    src, dst = pods[0], next(p for p in pods if p["spec"]["nodeName"] != pods[0]["spec"][
        "nodeName"])
    ping = subprocess.Popen(kube.kubectl_argv(
        "-n", NS, "exec", src["metadata"]["name"], "--", "ping", "-i", "0.2", "-w", "600",
        dst["status"]["podIP"]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(2)
        for ds in ("skein-node", "skein-speaker"):
            kube.kubectl("-n", SKEIN_NAMESPACE, "rollout", "restart", f"daemonset/{ds}")
        for ds in ("skein-node", "skein-speaker"):
            kube.kubectl("-n", SKEIN_NAMESPACE, "rollout", "status", f"daemonset/{ds}",
                         "--timeout=300s", timeout=330)
        time.sleep(2)
    finally:
        kube.kubectl("-n", NS, "exec", src["metadata"]["name"], "--", "killall", "-INT", "ping",
                     check=False)
        out, _ = ping.communicate(timeout=30)
    summary = [line for line in out.splitlines() if "packets transmitted" in line]
    assert summary, out[-2000:]
    sent, received = (int(summary[0].split()[i]) for i in (0, 3))
    assert sent > 20 and received == sent, summary[0]
    # New pods on the restarted network still get addresses and reach the old ones.
    kube.kubectl("-n", NS, "delete", "pod", dst["metadata"]["name"], "--wait=true")
    fresh = wait_pods(kube, NS, "app=whoami", len(kube.node_specs()))
    for p in fresh:
        code, out = exec_in(kube, NS, src["metadata"]["name"], "ping", "-c", "1", "-W", "3",
                            p["status"]["podIP"])
        assert code == 0, out
    assert running_pods(kube, SKEIN_NAMESPACE, "app.kubernetes.io/name=skein-node")
