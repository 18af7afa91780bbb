"""`skeinctl status` and `skeinctl diagram`: the node's network, read live, as a table,
JSON or a picture.

Why one command: "which network does this cluster use, which address blocks for pods
and services, where is my pod, which node answers for that LoadBalancer address"
otherwise takes `ip`, `bridge`, the CNI conf dir, the IPAM leases and the speaker.

    skeinctl status   [-o table|json] [--node NAME] [--cni-conf-dir DIR] [--service-cidr CIDR]
    skeinctl diagram  -o FILE.svg|FILE.png|FILE.dot  [same options]

On a node (or inside a node's namespace: `ip netns exec NODE skeinctl status`) it
reads that namespace.  With `--lab-manifests FILE` it reads every Node of a netns lab,
each in the namespace holding its InternalIP (see speaker/status/discover.py).
Entry point only: the work is in speaker.status.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import click

from speaker.cli.common import Client
from speaker.status.collect import (
    DEFAULT_CNI_CONF_DIR,
    NETNS_DIR,
    NodeTarget,
    collect_cluster,
)
from speaker.status.model import ClusterStatus, SpeakerState, to_json

LAB_CONF_DIR = os.path.join("{manifests_dir}", "{node}", "net.d")


def _options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--node", default=None,
                     help="this node's name (default: the host name); ignored with "
                          "--lab-manifests"),
        click.option("--cni-conf-dir", default=None,
                     help=f"CNI configuration directory (default {DEFAULT_CNI_CONF_DIR}; with "
                          "--lab-manifests <manifests dir>/{node}/net.d); {node} is replaced "
                          "by each node's name"),
        click.option("--service-cidr", "service_cidrs", multiple=True, metavar="CIDR",
                     help="the cluster's service CIDR (repeatable); no kernel shows it"),
        click.option("--manifests", type=click.Path(exists=True, dir_okay=False),
                     help="a manifests file to take the service CIDR from (Calico "
                          "BGPConfiguration default, serviceClusterIPs)"),
        click.option("--lab-manifests", type=click.Path(exists=True, dir_okay=False),
                     help="a netns lab's manifests file: read every Node in it, each in the "
                          "network namespace holding its InternalIP"),
        click.option("--speaker-socket", default=None, metavar="PATH",
                     help="the speaker's API socket ({node} is replaced by each node's name; "
                          "default: skeinctl's --socket, or with --lab-manifests the "
                          "--api-socket of the skein-speaker running in each node's namespace)"),
        click.option("--no-speaker", is_flag=True,
                     help="do not ask the speaker (no LoadBalancer addresses, no BGP)"),
        click.option("--netns-dir", default=NETNS_DIR, show_default=True, hidden=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _speaker_lookup(targets: list[NodeTarget], template: str | None, lab: bool,
                    netns_dir: str) -> Callable[[NodeTarget], SpeakerState | None]:
    from dataclasses import replace

    from speaker.api.client import Endpoint
    from speaker.status import discover
    from speaker.status.speaker_state import fetch, unreachable

    ctx = click.get_current_context(silent=True)
    client = ctx.find_object(Client) if ctx is not None else None
    base = client.endpoint if client is not None else Endpoint()
    timeout = min(client.timeout, 5.0) if client is not None else 5.0
    found = discover.speaker_sockets(targets, netns_dir) if lab and template is None else {}

    def lookup(target: NodeTarget) -> SpeakerState | None:
        if template is not None:
            endpoint = replace(base, socket=template.replace("{node}", target.name),
                               address=None)
        elif lab:
            if target.name not in found:
                return unreachable("speaker", f"no skein-speaker --node {target.name} runs in "
                                   f"namespace {target.netns}")
            endpoint = replace(base, socket=found[target.name], address=None)
        else:
            endpoint = base
        return fetch(endpoint, target.name if lab or template else None, timeout)

    return lookup


def gather(node: str | None, cni_conf_dir: str | None, service_cidrs: tuple[str, ...],
           manifests: str | None, lab_manifests: str | None, speaker_socket: str | None,
           no_speaker: bool, netns_dir: str) -> ClusterStatus:
    from speaker.status import discover

    source = "--service-cidr" if service_cidrs else "unknown"
    state_file = lab_manifests or manifests
    state = discover.manifest_state(state_file) if state_file else None
    if not service_cidrs and state is not None:
        service_cidrs, source = discover.service_cidrs(state)
    for cidr in service_cidrs:
        _check_cidr(cidr)
    if state is not None and lab_manifests:
        template = cni_conf_dir or LAB_CONF_DIR.replace(
            "{manifests_dir}", os.path.dirname(os.path.abspath(lab_manifests)))
        targets, problems = discover.lab_targets(state, template, netns_dir,
                                                 lab_manifests)
        for problem in problems:
            click.echo(f"skeinctl: {problem}", err=True)
        if not targets:
            raise click.ClickException(f"no node of {lab_manifests} was found in any "
                                       f"namespace under {netns_dir}")
    else:
        name = node or socket.gethostname()
        targets = [NodeTarget(name, None, (cni_conf_dir or DEFAULT_CNI_CONF_DIR)
                              .replace("{node}", name))]
    lookup = None if no_speaker else _speaker_lookup(targets, speaker_socket,
                                                     bool(lab_manifests), netns_dir)
    return collect_cluster(targets, service_cidrs=service_cidrs, service_cidrs_source=source,
                           speaker=lookup, netns_dir=netns_dir)


def _check_cidr(text: str) -> None:
    import ipaddress

    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--service-cidr") from None


@click.command("status")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default=None,
              help="table or json (default: skeinctl's -o, else table)")
@_options
def status(output: str | None, **kw: Any) -> None:
    """The node's network: CNI, pod and service CIDRs, pods, VXLAN peers,
    LoadBalancer addresses and BGP sessions, read from the live kernel."""
    from speaker.status.render import table

    if output is None:
        ctx = click.get_current_context()
        client = ctx.find_object(Client)
        output = client.output if client is not None else "table"
    cluster = gather(**kw)
    if output == "json":
        json.dump(to_json(cluster), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        click.echo(table(cluster), nl=False)


@click.command("diagram")
@click.option("-o", "--output", "path", required=True, metavar="FILE",
              help="where to write the picture: .svg, .png or .dot (Graphviz source)")
@click.option("--title", default="", help="the picture's title")
@_options
def diagram(path: str, title: str, **kw: Any) -> None:
    """A Graphviz picture of `skeinctl status`: nodes, pods, veths into cni0, the
    VXLAN device and tunnels, LoadBalancer addresses and BGP peers."""
    from speaker.status.output import diagram_format, write_diagram
    from speaker.status.render import diagram as draw

    try:
        diagram_format(path)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-o") from None
    cluster = gather(**kw)
    write_diagram(draw(cluster, title), path)
    click.echo(f"wrote {path}", err=True)


COMMANDS = (status, diagram)
