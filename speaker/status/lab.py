"""The status and diagram of a netns lab (cni_plugin.lab.cluster.Lab), for the demo.

Why: the one-machine demo ends with a picture of what it built.  Everything is read
live from the lab's namespaces (collect.py), exactly as `skeinctl status` reads a
node; the lab only says where each node's namespace and CNI conf dir are, and gives
the pods their lab names (a real node does not know a pod's Kubernetes name).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from speaker.status.collect import NodeTarget, SpeakerLookup, collect_cluster
from speaker.status.model import ClusterStatus
from speaker.status.output import write_diagram
from speaker.status.render import diagram

if TYPE_CHECKING:
    from cni_plugin.lab.cluster import Lab


def lab_targets(lab: Lab) -> list[NodeTarget]:
    return [NodeTarget(n.name, n.ns.name, n.conf_dir) for n in lab.nodes.values()]


def collect_lab(lab: Lab, speaker: SpeakerLookup | None = None,
                service_cidrs: Sequence[str] = (),
                service_cidrs_source: str = "unknown") -> ClusterStatus:
    """Every node of the lab, read live; pods named as the lab named them."""
    names = {p.ns.name: p.name for n in lab.nodes.values() for p in n.pods.values()}
    cluster = collect_cluster(lab_targets(lab), service_cidrs=service_cidrs,
                              service_cidrs_source=service_cidrs_source, speaker=speaker)
    return ClusterStatus(tuple(dataclasses.replace(node, pods=tuple(
        dataclasses.replace(p, name=names.get(p.netns or "", p.name)) for p in node.pods))
        for node in cluster.nodes))


def write_lab_diagram(lab: Lab, path: str, speaker: SpeakerLookup | None = None,
                      service_cidrs: Sequence[str] = ()) -> ClusterStatus:
    """Write the lab's diagram to `path` (.svg, .png or .dot) and return what it shows."""
    cluster = collect_lab(lab, speaker, service_cidrs,
                          "given" if service_cidrs else "unknown")
    write_diagram(diagram(cluster, title=f"Skein lab {lab.tag}: what the kernel holds"), path)
    return cluster
