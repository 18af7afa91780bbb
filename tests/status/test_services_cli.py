"""Services and kube-proxy's rules as `skeinctl status` reads them, the status JSON
read back (`--from-status`), the checks the pictures must pass (that they catch
what they are for), and skeinctl's conventions (kubectl's -o, completion, one line
for an unreachable speaker, where `diagram` writes).  No root, no namespaces."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from lab import kubeproxy
from lab.cluster import scripts_dir
from speaker.api.client import Endpoint
from speaker.cli import main as skeinctl
from speaker.status import discover
from speaker.status.diagram import draw
from speaker.status.model import ClusterStatus, from_json, merge, to_json, with_peer_names
from speaker.status.output import laid_out, render
from speaker.status.render import table
from speaker.status.services import name_pods, parse_iptables, pod_names, service_views
from speaker.status.speaker_state import unreachable_message, unreachable_reason
from tests.status.picture import layout_problems, svg_problems
from tests.status.test_render import L2, SERVICES, node, proxied, speaker

# kube-proxy v1.34, iptables mode, `iptables-save -t nat` on a node (trimmed to two
# Services): masquerade marks, a UDP Service with two endpoints, a NodePort with
# externalTrafficPolicy Local.
KUBE_PROXY_SAVE = (Path(__file__).parent / "data" / "kube-proxy-iptables-save.txt").read_text()


def test_kube_proxy_iptables_rules_are_read_to_their_endpoints():
    rules = {(r.service, r.kind): r for r in parse_iptables(KUBE_PROXY_SAVE)}
    assert set(rules) == {("kube-system/kube-dns:dns", "cluster IP"),
                          ("demo/web:http", "cluster IP"), ("demo/web:http", "nodeport"),
                          ("demo/web:http", "loadbalancer IP")}
    dns = rules[("kube-system/kube-dns:dns", "cluster IP")]
    assert (dns.address, dns.port, dns.protocol) == ("10.96.0.10", 53, "UDP")
    assert dns.endpoints == ("10.244.0.5:53", "10.244.2.7:53")
    node_port = rules[("demo/web:http", "nodeport")]
    assert (node_port.address, node_port.port, node_port.endpoints) == (
        None, 31080, ("10.244.1.9:8080",))
    assert rules[("demo/web:http", "loadbalancer IP")].address == "192.168.56.200"
    assert parse_iptables("*nat\nCOMMIT\n") == ()


def test_the_lab_kube_proxy_writes_what_kube_proxy_writes():
    """lab/kubeproxy.py's rules read back as the Services it was given: a ClusterIP
    to every endpoint, NodePort and LB (policy Local) to the node's own."""
    ports = [kubeproxy.ServicePort("default", "web", "http", 80, 8080, "10.96.0.20", 30080,
                                   ("10.99.0.200",),
                                   (("10.244.0.2", "node1"), ("10.244.1.2", "node2")))]
    rules = {r.kind: r for r in parse_iptables(kubeproxy.rules("node2", ports))}
    assert rules["cluster IP"].endpoints == ("10.244.0.2:8080", "10.244.1.2:8080")
    assert rules["nodeport"].endpoints == ("10.244.1.2:8080",)
    assert rules["loadbalancer IP"].endpoints == ("10.244.1.2:8080",)
    assert {r.service for r in rules.values()} == {"default/web:http"}


MANIFESTS = """
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: kubernetes}
spec: {cidrs: [10.96.0.0/16]}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: demo}
  spec:
    type: LoadBalancer
    clusterIP: 10.96.44.2
    externalTrafficPolicy: Local
    ports: [{name: http, port: 80, targetPort: 8080, nodePort: 31080}]
  status: {loadBalancer: {ingress: [{ip: 192.168.56.200}]}}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: web-abc, namespace: demo, labels: {kubernetes.io/service-name: web}}
  addressType: IPv4
  endpoints:
  - addresses: [10.244.1.9]
    nodeName: node2
    targetRef: {kind: Pod, name: web-7d9f, namespace: demo}
  ports: [{name: http, port: 8080}]
- apiVersion: v1
  kind: Pod
  metadata: {name: client-1, namespace: demo}
  status: {podIP: 10.244.0.2, podIPs: [{ip: 10.244.0.2}]}
"""


def test_services_and_service_cidr_from_the_api_objects(tmp_path: Path):
    path = tmp_path / "objects.yaml"
    path.write_text(MANIFESTS)
    docs = discover.manifest_documents(str(path))
    assert discover.service_cidrs_of(docs) == (("10.96.0.0/16",), "ServiceCIDR objects")
    names = pod_names(docs)
    assert names == {"10.244.1.9": "demo/web-7d9f", "10.244.0.2": "demo/client-1"}
    (web,) = service_views(discover.state_of(docs), names)
    assert (web.key, web.type, web.cluster_ips, web.ingress) == (
        "demo/web", "LoadBalancer", ("10.96.44.2",), ("192.168.56.200",))
    assert web.ports[0].node_port == 31080 and web.ports[0].target_port == "8080"
    assert [(e.address, e.node, e.pod) for e in web.endpoints] == [
        ("10.244.1.9", "node2", "demo/web-7d9f")]
    cluster = name_pods(ClusterStatus((node(0, ()),)), names)
    assert cluster.nodes[0].pods[0].name == "demo/client-1"


def _full_cluster() -> ClusterStatus:
    nodes = tuple(dataclasses.replace(node(i, tuple(j for j in range(3) if j != i),
                                           speaker(L2) if i == 0 else None, pods=2),
                                      proxy=proxied(i), proxy_source="iptables")
                  for i in range(3))
    return with_peer_names(ClusterStatus(nodes, services=SERVICES))


def test_status_json_reads_back_and_merges():
    cluster = _full_cluster()
    doc = json.loads(json.dumps(to_json(cluster)))
    assert from_json(doc) == cluster
    parts = [from_json(json.loads(json.dumps(to_json(ClusterStatus((n,))))))
             for n in cluster.nodes]
    merged = merge([*parts, ClusterStatus(services=SERVICES)])
    assert merged == cluster


def test_table_and_wide_table_show_services_and_kube_proxy():
    cluster = _full_cluster()
    broken = dataclasses.replace(cluster, nodes=(
        *cluster.nodes[:2], dataclasses.replace(cluster.nodes[2], proxy=())))
    text = table(broken)
    assert re.search(r"default/web +LoadBalancer +10\.96\.0\.20 +10\.99\.0\.200 +"
                     r"80:30080/TCP +2/2 +missing on node3", text), text
    assert "kube-proxy: iptables, 4 Service addresses of 2 Services" in text
    assert "CONTAINER" not in text and "02:00:00:00:00:00" not in text
    wide = table(cluster, wide=True)
    assert "CONTAINER" in wide and "mac 02:00:00:00:00:00" in wide
    assert re.search(r"default/web:http +nodeport +\(every node address\) +30080/TCP +"
                     r"10\.244\.0\.2:8080", wide), wide


def test_the_picture_checks_catch_what_the_issue_saw():
    """A second line for one pair, an unlabelled tunnel, a colour the legend does not
    explain, a legend entry nothing uses, text out of its box and a label on a box:
    each is reported."""
    cluster = _full_cluster()
    drawing = draw(cluster)
    final = laid_out(drawing)
    assert layout_problems(final) == []
    svg = render(drawing, "svg").decode()
    assert svg_problems(svg.encode(), cluster) == []
    doubled = re.sub(r'(<g id="edge\d+" class="edge tunnel">\s*<title>node2/skein.1&#45;&gt;'
                     r'node3/skein.1</title>.*?</g>)', r"\1\1", svg, count=1, flags=re.S)
    assert "nodes node2 and node3: 2 tunnel edges, not 1" in svg_problems(doubled.encode(),
                                                                          cluster)
    unlabelled = re.sub(r"VXLAN 10\.99\.0\.11 ⇄ 10\.99\.0\.13", "", svg)
    assert any("tunnel node1-node3: label" in p
               for p in svg_problems(unlabelled.encode(), cluster))
    green = svg.replace('stroke="#15803d"', 'stroke="#00ff00"', 1)
    problems = svg_problems(green.encode(), cluster)
    assert any("#00ff00" in p and "not in the legend" in p for p in problems), problems
    unused = svg.replace('fill="#fef9c3"', 'fill="#fffff0"')  # the router's yellow
    problems = svg_problems(unused.encode(), cluster)
    assert "legend fill #fffff0 is used nowhere" not in problems  # legend changed too
    router_only = re.sub(r'(<title>router/10\.99\.0\.1</title>\s*<path fill=")#fef9c3',
                         r"\1#123456", svg)
    problems = svg_problems(router_only.encode(), cluster)
    assert "legend fill #fef9c3 is used nowhere" in problems, problems
    assert "fill #123456 is not in the legend" in problems
    squeezed = re.sub(r'("node1/eth0" \[.*?, width=)"[0-9.]+"', r'\1"0.3"', final, count=1)
    squeezed = squeezed.replace('"node1/eth0" [', '"node1/eth0" [fixedsize=true, ', 1)
    assert any("node1/eth0: text" in p and "runs out of its box" in p
               for p in layout_problems(squeezed))
    moved = re.sub(r'(-> "node1/skein.1" \[.*?lp=)"[0-9.,]+"', lambda m: m.group(1)
                   + '"' + _center(final, "node1/cni0") + '"', final, count=1, flags=re.S)
    assert any("lies on node1/cni0" in p for p in layout_problems(moved))


def _center(final: str, name: str) -> str:
    match = re.search(rf'"{re.escape(name)}" \[.*?pos="([0-9.,]+)"', final)
    assert match
    return match.group(1)


# -- skeinctl's conventions ----------------------------------------------------------------

def run(*argv: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(skeinctl, list(argv), input=input)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str):
    code, out, _ = run("completion", shell)
    assert code == 0 and "_SKEINCTL_COMPLETE" in out and f"{shell}_complete" in out


def test_completion_completes_commands_and_choices():
    """What the installed script asks skeinctl when Tab is pressed."""
    def complete(words: str) -> list[str]:
        env = {**os.environ, "_SKEINCTL_COMPLETE": "bash_complete", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}
        proc = subprocess.run([os.path.join(scripts_dir(), "skeinctl")], env=env,
                              capture_output=True, text=True, timeout=60, check=True)
        return proc.stdout.split()

    assert "plain,wide" in complete("skeinctl -o w")
    assert "plain,diagram" in complete("skeinctl dia")
    assert "plain,--from-status" in complete("skeinctl status --fr")


def test_status_from_saved_json_in_every_output(tmp_path: Path):
    cluster = _full_cluster()
    files = []
    for n in cluster.nodes:
        path = tmp_path / f"{n.name}.json"
        path.write_text(json.dumps(to_json(ClusterStatus((n,)))))
        files += ["--from-status", str(path)]
    code, out, err = run("-o", "yaml", "status", *files)
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert [n["name"] for n in doc["nodes"]] == ["node1", "node2", "node3"]
    code, out, _ = run("status", "--from-status", str(tmp_path), "-o", "json")
    assert code == 0 and json.loads(out)["podCIDRs"][2] == "10.244.2.0/24"
    code, out, _ = run("status", "--from-status", str(tmp_path), "-o", "wide")
    assert code == 0 and "CONTAINER" in out
    code, out, _ = run("status", "--from-status", str(tmp_path))
    assert code == 0 and "CONTAINER" not in out and "node3" in out
    code, _, err = run("status", "--from-status", str(tmp_path / "node1.json"),
                       "--from-status", str(tmp_path))
    assert code == 0, err


def test_diagram_takes_a_file_not_dash_o(tmp_path: Path):
    cluster = _full_cluster()
    saved = tmp_path / "all.json"
    saved.write_text(json.dumps(to_json(cluster)))
    code, _, err = run("diagram", "--from-status", str(saved), "-o", "x.svg")
    assert code == 2 and "skeinctl diagram x.svg" in err and "-o is how" in err
    code, _, err = run("diagram", "--from-status", str(saved))
    assert code == 2 and "where to?" in err
    code, _, err = run("diagram", "--from-status", str(saved), "-")
    assert code == 2 and "needs --format" in err
    code, _, err = run("diagram", "--from-status", str(saved), "x.jpg")
    assert code == 2 and ".svg, .png or .dot" in err
    code, _, err = run("diagram", "--from-status", str(saved), str(tmp_path / "a.svg"),
                       "--output-file", str(tmp_path / "b.svg"))
    assert code == 2 and "once" in err
    code, _, err = run("diagram", "--from-status", str(saved), str(tmp_path / "a.svg"))
    assert code == 0 and (tmp_path / "a.svg").read_bytes().startswith(b"<?xml")
    code, _, err = run("diagram", "--from-status", str(saved), "--output-file",
                       str(tmp_path / "b.png"))
    assert code == 0 and (tmp_path / "b.png").read_bytes().startswith(b"\x89PNG")
    code, out, err = run("diagram", "--from-status", str(saved), "-", "--format", "dot")
    assert code == 0 and "neato -n2" in out
    code, _, err = run("diagram", "--from-status", str(tmp_path / "a.svg"), "x.svg")
    assert code == 2 and "not the JSON of `skeinctl status -o json`" in err


def test_an_unreachable_speaker_is_one_clear_line(tmp_path: Path):
    missing = str(tmp_path / "speaker.sock")
    code, _, err = run("--socket", missing, "peers")
    assert code == 1
    (line,) = err.strip().splitlines()
    assert line == (f"Error: cannot reach the speaker at unix:{missing}: No such file or "
                    "directory; is skein-speaker running on this node? Its socket: --socket "
                    "PATH; in a cluster, run skeinctl in the node's skein-node pod: kubectl "
                    "-n skein-system exec POD -c skein-agent -- skeinctl ...")
    raw = ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
           "Failed to connect to remote host: Connection refused")
    assert unreachable_reason(raw) == "Connection refused"
    assert unreachable_message(Endpoint(address="tcp://127.0.0.1:1"), raw) == (
        "cannot reach the speaker at tcp://127.0.0.1:1: Connection refused")
    raw = ("failed to connect to all addresses; last error: FAILED_PRECONDITION: "
           f"unix:{missing}: connect failed: addr: unix:{missing} error: Permission denied")
    (tmp_path / "speaker.sock").write_text("")
    assert unreachable_message(Endpoint(socket=missing), raw).endswith(
        "Permission denied (the socket is for root only)")
