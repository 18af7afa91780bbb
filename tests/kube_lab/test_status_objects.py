"""MetalLB's status surfaces in a real cluster, written by the shipped speakers
(speaker/kube_status.py, speaker/metrics.py): a ServiceL2Status naming the node
that answers ARP for the Service, a ServiceBGPStatus per announcing node with
its BGPPeers, the nodeAssigned Event, MetalLB's metrics scraped from the lab's
client, and the objects gone when the Service is."""

from __future__ import annotations

import re
from typing import Any

from lab.kube.cluster import SKEIN_NAMESPACE, KubeLab
from lab.netns import Netns
from tests.kube_lab.conftest import client_get, wait_for
from tests.kube_lab.test_cluster import NS, _lb_service, apply, lb_address, whoami_pods

KINDS = ("servicel2statuses", "servicebgpstatuses")
SERVICE_NAME, SERVICE_NAMESPACE, NODE = (
    "metallb.io/service-name", "metallb.io/service-namespace", "metallb.io/node")


def ensure_status_crds(kube: KubeLab) -> None:
    """install/manifests/10-crds.yaml serves MetalLB's two status kinds."""
    for plural in KINDS:
        name = f"{plural}.metallb.io"
        wait_for(lambda n=name: kube.kubectl("get", "crd", n, "-o",
                                             "jsonpath={.status.acceptedNames.kind}",
                                             check=False).stdout.strip(), 60,
                 f"{name} served")


def statuses(kube: KubeLab, plural: str, service: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.kubectl_json(
        "-n", SKEIN_NAMESPACE, "get", plural, "-l",
        f"{SERVICE_NAME}={service},{SERVICE_NAMESPACE}={NS}")["items"]
    return items


def node_assigned(kube: KubeLab, service: str) -> list[str]:
    events = kube.kubectl_json("-n", NS, "get", "events", "--field-selector",
                               f"reason=nodeAssigned,involvedObject.name={service}")["items"]
    return [e["message"] for e in events]


def neighbour_mac(kube: KubeLab, address: str) -> str | None:
    out = kube.client_ns.ip("neigh", "show", address).stdout
    found = re.search(r"lladdr (\S+)", out)
    return found.group(1) if found else None


def l2_owner(kube: KubeLab, address: str) -> str:
    """The node whose MAC the client reached `address` through."""
    assert wait_for(lambda: client_get(kube, f"http://{address}/cgi-bin/ip"), 60,
                    f"the client reaches {address}")
    macs = {Netns(n.netns).ip("-br", "link", "show", "eth0").stdout.split()[2]: n.name
            for n in kube.node_specs()}
    mac = neighbour_mac(kube, address)
    assert mac in macs, (mac, macs)
    return macs[mac]


def speaker_pods(kube: KubeLab) -> dict[str, dict[str, Any]]:
    pods = kube.kubectl_json("-n", SKEIN_NAMESPACE, "get", "pods", "-l",
                             "app.kubernetes.io/name=skein-speaker")["items"]
    return {p["spec"]["nodeName"]: p for p in pods}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value, as Prometheus parses the exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(kube: KubeLab, node_ip: str) -> str:
    text = client_get(kube, f"http://{node_ip}:7472/metrics")
    assert text is not None, f"no metrics on {node_ip}:7472"
    return text


def test_l2_status_event_and_metrics_name_the_announcing_node(kube: KubeLab) -> None:
    ensure_status_crds(kube)
    whoami_pods(kube)
    apply(kube, _lb_service("st-l2", "l2-pool") + "---\n" + _lb_service("st-bgp", "bgp-pool"))
    address = lb_address(kube, "st-l2")
    owner = l2_owner(kube, address)

    def one_status() -> dict[str, Any] | None:
        found = statuses(kube, "servicel2statuses", "st-l2")
        return found[0] if len(found) == 1 and found[0].get("status") else None

    status = wait_for(one_status, 90, "one ServiceL2Status for st-l2")
    assert status["status"] == {"node": owner, "serviceName": "st-l2", "serviceNamespace": NS}
    assert status["metadata"]["name"].startswith("l2-")
    assert status["metadata"]["labels"][NODE] == owner
    pod = speaker_pods(kube)[owner]
    assert [(r["kind"], r["name"], r["uid"]) for r in status["metadata"]["ownerReferences"]] \
        == [("Pod", pod["metadata"]["name"], pod["metadata"]["uid"])]
    message = f'announcing from node "{owner}" with protocol "layer2"'
    wait_for(lambda: message in node_assigned(kube, "st-l2"), 60, "the nodeAssigned event")

    # BGP: every node announces (BGPAdvertisement of install/examples), each its object.
    def bgp_nodes() -> dict[str, Any]:
        return {s["status"].get("node"): s["status"] for s in
                statuses(kube, "servicebgpstatuses", "st-bgp") if s.get("status")}

    nodes = {n.name for n in kube.node_specs()}
    found = wait_for(lambda: bgp_nodes() if set(bgp_nodes()) == nodes else None, 90,
                     "a ServiceBGPStatus for st-bgp from every node")
    assert all(s["peers"] == ["router"] for s in found.values()), found

    # Drift: one node's object deleted and another's status edited by hand.  Each
    # speaker watches its objects and writes them back (no timer relists them).
    names = {s["status"]["node"]: s["metadata"]["name"]
             for s in statuses(kube, "servicebgpstatuses", "st-bgp")}
    deleted, edited = sorted(nodes)[:2]
    kube.kubectl("-n", SKEIN_NAMESPACE, "delete", "servicebgpstatus", names[deleted])
    kube.kubectl("-n", SKEIN_NAMESPACE, "patch", "servicebgpstatus", names[edited],
                 "--subresource=status", "--type=merge", "-p", '{"status":{"peers":[]}}')

    def repaired() -> bool:
        items = statuses(kube, "servicebgpstatuses", "st-bgp")
        return (sorted(s["metadata"]["labels"][NODE] for s in items) == sorted(nodes)
                and names[deleted] not in {s["metadata"]["name"] for s in items}
                and all((s.get("status") or {}).get("peers") == ["router"] for s in items))

    wait_for(repaired, 60, "the deleted ServiceBGPStatus back and the edited one set back")

    # MetalLB's metrics, from the client on the underlay.
    ip = {n.name: n.ip for n in kube.node_specs()}
    bgp_address = lb_address(kube, "st-bgp")

    peer = {"peer": "192.168.56.5:179"}

    def metrics_show_it() -> bool:
        values = samples(scrape(kube, ip[owner]))
        return (values.get(("metallb_bgp_session_up", frozenset(peer.items()))) == 1
                and values.get(("metallb_speaker_announced", frozenset({
                    "protocol": "layer2", "service": f"{NS}/st-l2", "node": owner,
                    "ip": address}.items()))) == 1
                and values.get(("metallb_speaker_announced", frozenset({
                    "protocol": "bgp", "service": f"{NS}/st-bgp", "node": owner,
                    "ip": bgp_address}.items()))) == 1)

    wait_for(metrics_show_it, 60, f"MetalLB's metrics on {owner}")
    values = samples(scrape(kube, ip[owner]))
    assert values[("metallb_bgp_announced_prefixes_total", frozenset(peer.items()))] >= 1

    # The Services gone: so are their status objects.
    kube.kubectl("-n", NS, "delete", "service", "st-l2", "st-bgp")
    wait_for(lambda: not statuses(kube, "servicel2statuses", "st-l2")
             and not statuses(kube, "servicebgpstatuses", "st-bgp"), 60,
             "the status objects removed with their Services")


REFUSED = """apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: refused-peer
  namespace: metallb-system
spec:
  myASN: 64512
  peerASN: 65000
  peerAddress: 192.168.56.250
  bfdProfile: no-such-profile
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: refused-pool
  namespace: metallb-system
spec:
  autoAssign: false
  addresses:
  - not-an-address
"""


def refusals(kube: KubeLab, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.kubectl_json(
        "-n", "metallb-system", "get", "events", "--field-selector",
        f"reason=ConfigRefused,involvedObject.name={name}")["items"]
    return items


def test_refused_objects_get_a_warning_event_naming_the_field(kube: KubeLab) -> None:
    """What the API server accepts (MetalLB's CRDs allow it) but a speaker cannot act
    on: an Event on that object, naming the field, from every node."""
    nodes = {n.name for n in kube.node_specs()}
    apply(kube, REFUSED)
    try:
        for name, field in (("refused-peer", "spec.bfdProfile"),
                            ("refused-pool", "spec.addresses")):
            events = wait_for(lambda n=name: (found := refusals(kube, n))
                              and {e["source"].get("host") for e in found} == nodes
                              and found, 60, f"a ConfigRefused Event on {name} from every node")
            for event in events:
                assert event["type"] == "Warning"
                assert event["involvedObject"]["kind"] in ("BGPPeer", "IPAddressPool")
                assert event["message"].startswith(field), event["message"]
    finally:
        kube.kubectl("-n", "metallb-system", "delete", "bgppeer/refused-peer",
                     "ipaddresspool/refused-pool", "--ignore-not-found", check=False)
