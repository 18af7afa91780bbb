"""The status and diagram of a netns lab (lab.cluster.Lab), for the demo.

Why: the one-machine demo ends with a picture of what it built.  Everything is read
live from the lab's namespaces (collect.py), exactly as `skeinctl status` reads a
node; the lab only says where each node's namespace and CNI conf dir are, and gives
the pods their lab names (a real node does not know a pod's Kubernetes name).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from speaker.status.collect import NodeTarget, SpeakerLookup, collect_cluster
from speaker.status.model import ClusterStatus, SpeakerState
from speaker.status.output import write_diagram
from speaker.status.render import diagram

if TYPE_CHECKING:
    from lab.cluster import Lab


def lab_targets(lab: Lab) -> list[NodeTarget]:
    return [NodeTarget(n.name, n.ns.name, n.conf_dir) for n in lab.nodes.values()]


def lab_speakers(lab: Lab) -> SpeakerLookup:
    """Ask each node's skein-speaker, found running in the node's namespace, on the
    API socket of its command line (give each its own `--api-socket` in a lab: the
    default path is one file for all of them)."""
    from speaker.api.client import Endpoint
    from speaker.status.discover import speaker_sockets
    from speaker.status.speaker_state import fetch, unreachable

    sockets = speaker_sockets(lab_targets(lab))

    def lookup(target: NodeTarget) -> SpeakerState | None:
        path = sockets.get(target.name)
        if path is None:
            return unreachable("speaker", f"no skein-speaker runs in {target.netns}")
        return fetch(Endpoint(socket=path), target.name)

    return lookup


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
    """Write the lab's diagram to `path` (.svg, .png or .dot) and return what it shows.
    The speakers are asked through `lab_speakers` unless `speaker` says otherwise; the
    service CIDR is taken from the lab's manifests (Calico BGPConfiguration) if not given."""
    source = "given"
    if not service_cidrs and os.path.exists(lab.manifests_path):
        from speaker.status.discover import manifest_state
        from speaker.status.discover import service_cidrs as cidrs_of

        service_cidrs, source = cidrs_of(manifest_state(lab.manifests_path))
    cluster = collect_lab(lab, speaker or lab_speakers(lab), service_cidrs, source)
    write_diagram(diagram(cluster, title=f"Skein lab {lab.tag}: what the kernel holds"), path)
    return cluster
