"""The part of kube-proxy the lab needs: LoadBalancer traffic to a pod.

In a cluster, kube-proxy DNATs a packet for a LoadBalancer address to one of
the Service's endpoints.  The lab has no kube-proxy, so each node gets one
nftables rule per Service: traffic for LB-IP:port arriving at the node goes
to a pod on that same node (`externalTrafficPolicy: Local` semantics: no
extra hop, no SNAT, the pod sees the client's address).  The speaker only
attracts the traffic (ARP/NDP or BGP); this is what delivers it.
"""

from __future__ import annotations

from lab.cluster import Node

TABLE = "skein_lab_proxy"


def expose(node: Node, address: str, port: int, pod_ip: str, target_port: int) -> None:
    family = "ip6" if ":" in address else "ip"
    node.ns.run("nft", "-f", "-", input=(
        f"add table inet {TABLE}\n"
        f"add chain inet {TABLE} prerouting {{ type nat hook prerouting priority dstnat; }}\n"
        f"add rule inet {TABLE} prerouting {family} daddr {address} tcp dport {port} "
        f"dnat {family} to {pod_ip}:{target_port}\n"))
