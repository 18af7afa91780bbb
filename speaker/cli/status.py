"""`skeinctl status` and `skeinctl diagram`: the node's network, read live, as a table,
JSON, YAML or a picture.

Why one command: "which network does this cluster use, which address blocks for pods
and services, where is my pod, which node answers for that LoadBalancer address"
otherwise takes `ip`, `bridge`, the CNI conf dir, the IPAM leases, iptables and the
speaker.

    skeinctl status   [-o table|wide|json|yaml] [--node NAME] [--cni-conf-dir DIR]
                      [--service-cidr CIDR] [--manifests FILE]
    skeinctl diagram  [FILE | --output-file FILE] [--format svg|png|dot] [same options]
    skeinctl status|diagram --from-status NODE.json ...   (what `status -o json` wrote)

On a node (or inside a node's namespace: `ip netns exec NODE skeinctl status`) it
reads that namespace.  With `--lab-manifests FILE` it reads every Node of a netns lab,
each in the namespace holding its InternalIP (see speaker/status/discover.py).  In a
cluster, run it in each node's skein-node pod (`kubectl exec`), and draw the nodes'
JSON together with `--from-status` (README: "skeinctl in a cluster").
Entry point only: the work is in speaker.status.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from speaker.cli.common import OUTPUTS, Client, dump
from speaker.status.collect import (
    DEFAULT_CNI_CONF_DIR,
    NETNS_DIR,
    NodeTarget,
    collect_cluster,
)
from speaker.status.model import ClusterStatus, SpeakerState, from_json, merge, to_json

LAB_CONF_DIR = os.path.join("{manifests_dir}", "{node}", "net.d")
PICTURE_FORMATS = ("svg", "png", "dot")


def _options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--node", default=None, envvar="NODE_NAME",
                     help="this node's name (default: $NODE_NAME, as Skein's pods have it, "
                          "else the host name); ignored with --lab-manifests"),
        click.option("--cni-conf-dir", default=None,
                     help=f"CNI configuration directory (default {DEFAULT_CNI_CONF_DIR}; with "
                          "--lab-manifests <manifests dir>/{node}/net.d); {node} is replaced "
                          "by each node's name"),
        click.option("--service-cidr", "service_cidrs", multiple=True, metavar="CIDR",
                     help="the cluster's service CIDR (repeatable); no kernel shows it"),
        click.option("--manifests", type=click.Path(exists=True, dir_okay=False),
                     help="the cluster's objects: a manifests file, or `kubectl get "
                          "services,endpointslices,pods,servicecidrs -A -o yaml`; its "
                          "Services are shown, its ServiceCIDR (or Calico "
                          "BGPConfiguration) is the service CIDR"),
        click.option("--lab-manifests", type=click.Path(exists=True, dir_okay=False),
                     help="a netns lab's manifests file: read every Node in it, each in the "
                          "network namespace holding its InternalIP"),
        click.option("--from-status", "from_status", multiple=True, metavar="FILE|DIR",
                     type=click.Path(exists=True, allow_dash=True),
                     help="read nothing live: the nodes as `skeinctl status -o json` "
                          "wrote them (repeatable, one file per node, or a directory of "
                          "them: *.json), shown together"),
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
            endpoint = dataclasses.replace(base, socket=template.replace("{node}", target.name),
                                           address=None)
        elif lab:
            if target.name not in found:
                return unreachable("speaker", f"no skein-speaker --node {target.name} runs in "
                                   f"namespace {target.netns}")
            endpoint = dataclasses.replace(base, socket=found[target.name], address=None)
        else:
            endpoint = base
        return fetch(endpoint, target.name if lab or template else None, timeout)

    return lookup


def _read_status(given: Sequence[str]) -> ClusterStatus:
    paths: list[str] = []
    for path in given:
        if os.path.isdir(path):
            paths += sorted(os.path.join(path, n) for n in os.listdir(path)
                            if n.endswith(".json"))
        else:
            paths.append(path)
    if not paths:
        raise click.BadParameter(f"no *.json in {', '.join(given)}", param_hint="--from-status")
    parts = []
    for path in paths:
        try:
            if path == "-":
                doc = json.load(sys.stdin)
            else:
                with open(path, encoding="utf-8") as f:
                    doc = json.load(f)
            parts.append(from_json(doc))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise click.BadParameter(f"{path}: not the JSON of `skeinctl status -o json` "
                                     f"({exc})", param_hint="--from-status") from None
    return merge(parts)


def gather(node: str | None, cni_conf_dir: str | None, service_cidrs: tuple[str, ...],
           manifests: str | None, lab_manifests: str | None, from_status: tuple[str, ...],
           speaker_socket: str | None, no_speaker: bool, netns_dir: str) -> ClusterStatus:
    """The status the options ask for: live, or from saved JSON; with the Services and
    service CIDR of the cluster's objects when given."""
    from speaker.status import discover

    source = "--service-cidr" if service_cidrs else "unknown"
    state_file = lab_manifests or manifests
    docs = discover.manifest_documents(state_file) if state_file else None
    state = discover.state_of(docs) if docs is not None else None
    if not service_cidrs and docs is not None:
        service_cidrs, source = discover.service_cidrs_of(docs, state)
    for cidr in service_cidrs:
        _check_cidr(cidr)
    if from_status:
        cluster = _read_status(from_status)
        if service_cidrs:
            cluster = dataclasses.replace(cluster, nodes=tuple(
                dataclasses.replace(n, service_cidrs=tuple(service_cidrs),
                                    service_cidrs_source=source) for n in cluster.nodes))
    else:
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
        cluster = collect_cluster(targets, service_cidrs=service_cidrs,
                                  service_cidrs_source=source, speaker=lookup,
                                  netns_dir=netns_dir)
    if docs is not None and state is not None:
        from speaker.status.services import name_pods, pod_names, service_views

        names = pod_names(docs)
        cluster = name_pods(dataclasses.replace(
            cluster, services=service_views(state, names)), names)
    return cluster


def _check_cidr(text: str) -> None:
    import ipaddress

    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--service-cidr") from None


@click.command("status")
@click.option("-o", "--output", type=click.Choice(OUTPUTS), default=None,
              help="table, wide, json or yaml (default: skeinctl's -o, else table)")
@_options
def status(output: str | None, **kw: Any) -> None:
    """The node's network: CNI, pod and service CIDRs, pods, VXLAN peers, Services and
    kube-proxy's rules, LoadBalancer addresses and BGP sessions, read from the live
    kernel."""
    from speaker.status.render import table

    if output is None:
        ctx = click.get_current_context()
        client = ctx.find_object(Client)
        output = client.output if client is not None else "table"
    cluster = gather(**kw)
    if output in ("json", "yaml"):
        click.echo(dump(to_json(cluster), output).rstrip("\n"))
    else:
        click.echo(table(cluster, wide=output == "wide"), nl=False)


@click.command("diagram")
@click.argument("file", required=False, metavar="[FILE]")
@click.option("-f", "--output-file", "output_file", metavar="FILE",
              help="where to write the picture (or the FILE argument): .svg, .png or .dot "
                   "(Graphviz, laid out); - for standard output (with --format)")
@click.option("--format", "fmt", type=click.Choice(PICTURE_FORMATS), default=None,
              help="the picture's format (default: the file name's suffix)")
@click.option("--title", default="", help="the picture's title")
@click.option("-o", "--output", "misplaced", hidden=True, default=None,
              help="not here: -o is how the other commands print")
@_options
def diagram(file: str | None, output_file: str | None, fmt: str | None, title: str,
            misplaced: str | None, **kw: Any) -> None:
    """A picture of `skeinctl status`: nodes, pods, veths into cni0, the VXLAN devices
    and one tunnel per node pair, Services and kube-proxy, LoadBalancer addresses, the
    BGP router and the client.  Needs Graphviz (dot, neato)."""
    from speaker.status.diagram import draw
    from speaker.status.output import diagram_format, write_diagram

    if misplaced is not None:
        raise click.UsageError(f"diagram takes the file as FILE or --output-file "
                               f"(skeinctl diagram {misplaced}); -o is how the other "
                               "commands print (table, wide, json, yaml)")
    if file and output_file and file != output_file:
        raise click.UsageError("give the file once: FILE or --output-file FILE")
    path = output_file or file
    if not path:
        raise click.UsageError("where to? skeinctl diagram FILE.svg (or .png, .dot, or - "
                               "with --format)")
    if fmt is None:
        if path == "-":
            raise click.BadParameter("writing to standard output needs --format",
                                     param_hint="--format")
        try:
            fmt = diagram_format(path)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="FILE") from None
    cluster = gather(**kw)
    try:
        write_diagram(draw(cluster, title), path, fmt)
    except Exception as exc:  # noqa: BLE001 - graphviz missing or failing: say which
        import graphviz

        if isinstance(exc, graphviz.ExecutableNotFound):
            raise click.ClickException(
                "Graphviz is not installed here (apt-get install graphviz); or save "
                "`skeinctl status -o json` and draw it elsewhere: skeinctl diagram "
                "--from-status FILE.json OUT.svg") from None
        if isinstance(exc, graphviz.CalledProcessError | OSError):
            raise click.ClickException(f"could not draw {path}: {exc}") from None
        raise
    if path != "-":
        click.echo(f"wrote {path}", err=True)


COMMANDS = (status, diagram)
