"""The status and picture of a netns lab (lab.cluster.Lab), for the demo.

Why: the one-machine demo ends with a picture of what it built.  Everything is read
live from the lab's namespaces (speaker/status/collect.py), exactly as `skeinctl
status` reads a node; the lab only says where each node's namespace and CNI conf dir
are, gives the pods their lab names (a real node does not know a pod's Kubernetes
name), and adds what only it knows: its client, and the routes its router holds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from speaker.status.collect import NodeTarget, SpeakerLookup, collect_cluster
from speaker.status.model import (
    Client,
    ClusterStatus,
    RouterRoutes,
    ServiceView,
    SpeakerState,
)

if TYPE_CHECKING:
    from lab.cluster import Lab
    from lab.netns import Netns


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


def router_routes(ns: Netns, address: str, name: str) -> RouterRoutes:
    """What a router namespace's kernel holds from BGP (BIRD exports into it):
    prefix -> next hops."""
    out = ns.ip("-j", "route", "show", "proto", "bird", check=False).stdout
    routes = []
    for r in json.loads(out or "[]"):
        hops = [h["gateway"] for h in r.get("nexthops", []) if h.get("gateway")]
        if r.get("gateway"):
            hops.append(r["gateway"])
        dst = r.get("dst", "")
        if "/" not in dst:
            dst += "/32" if ":" not in dst else "/128"
        routes.append((dst, tuple(sorted(hops))))
    return RouterRoutes(address, name, tuple(sorted(routes)))


def collect_lab(lab: Lab, speaker: SpeakerLookup | None = None,
                service_cidrs: Sequence[str] = (),
                service_cidrs_source: str = "unknown") -> ClusterStatus:
    """Every node of the lab, read live; pods named as the lab named them; the
    Services of the lab's manifests, their endpoints named the same way."""
    from speaker.status.discover import manifest_documents, state_of
    from speaker.status.services import service_views

    names = {p.ns.name: p.name for n in lab.nodes.values() for p in n.pods.values()}
    by_ip = {p.address(): f"{n.name}/{p.name}" for n in lab.nodes.values()
             for p in n.pods.values()}
    cluster = collect_cluster(lab_targets(lab), service_cidrs=service_cidrs,
                              service_cidrs_source=service_cidrs_source, speaker=speaker)
    services: tuple[ServiceView, ...] = ()
    if os.path.exists(lab.manifests_path):
        services = service_views(state_of(manifest_documents(lab.manifests_path)), by_ip)
    return dataclasses.replace(cluster, services=services, nodes=tuple(
        dataclasses.replace(node, pods=tuple(
            dataclasses.replace(p, name=names.get(p.netns or "", p.name)) for p in node.pods))
        for node in cluster.nodes))


def lab_status(lab: Lab, speaker: SpeakerLookup | None = None,
               service_cidrs: Sequence[str] = (), clients: Sequence[Client] = (),
               routers: Sequence[RouterRoutes] = ()) -> ClusterStatus:
    """The lab's status as the picture shows it.  The speakers are asked through
    `lab_speakers` unless `speaker` says otherwise; the service CIDR is taken from the
    lab's manifests (ServiceCIDR, or Calico's BGPConfiguration) if not given."""
    source = "given"
    if not service_cidrs and os.path.exists(lab.manifests_path):
        from speaker.status.discover import manifest_documents, service_cidrs_of

        service_cidrs, source = service_cidrs_of(manifest_documents(lab.manifests_path))
    cluster = collect_lab(lab, speaker or lab_speakers(lab), service_cidrs, source)
    return dataclasses.replace(cluster, clients=tuple(clients), router_routes=tuple(routers))


def write_lab_diagram(lab: Lab, path: str, speaker: SpeakerLookup | None = None,
                      service_cidrs: Sequence[str] = (), clients: Sequence[Client] = (),
                      routers: Sequence[RouterRoutes] = ()) -> ClusterStatus:
    """Write the lab's picture to `path` (.svg, .png or .dot) and return what it shows."""
    from speaker.status.diagram import draw
    from speaker.status.output import write_diagram

    cluster = lab_status(lab, speaker, service_cidrs, clients, routers)
    write_diagram(draw(cluster, title=f"Skein lab {lab.tag}: what the kernel holds"), path)
    return cluster
