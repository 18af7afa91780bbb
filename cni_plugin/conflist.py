"""The node's CNI network configuration list, derived from its pod subnet.

Pure: the agent writes what this returns (atomically) into the CNI config
directory; the lab and the installer use the same function, so there is one
place that knows what a Skein node's conflist looks like.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from foundation import files

CONFLIST_NAME = "10-skein.conflist"
NETWORK_NAME = "skein"
# Runtimes check the version of every result against what they know: containerd
# 1.6 and 1.7 take results up to 1.0.0 and refuse 1.1.0 ("unsupported CNI result
# version").  1.0.0 is what every runtime in use takes.
CNI_VERSION = "1.0.0"
# Chained after skein: hostPort through the reference plugin, as flannel and kindnet do.
PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}


def node_conflist(pod_cidrs: list[str], *, data_dir: str = "/var/lib/cni/networks",
                  cluster_cidrs: list[str] | None = None, mtu: int | None = None,
                  vxlan: dict[str, Any] | None = None, ip_masq: bool = True,
                  agent_socket: str | None = None, agent_masquerades: bool | None = None,
                  port_map: bool = True) -> dict[str, Any]:
    """A conflist whose `skein` plugin hands out addresses from `pod_cidrs`
    (one range set per family), followed by the reference `portmap` plugin for
    hostPort (`port_map`).

    With `ip_masq`, traffic that leaves the cluster (`cluster_cidrs`, the union
    of all nodes' pod subnets) is masqueraded: by skein-agent's one rule set
    for the node (cni_plugin/agent/masquerade.py) when `agent_masquerades`
    (default: when the conflist names an `agent_socket`), and then the plugin's
    own `ipMasq` is off, as in flannel's delegate config, so no ADD or DEL runs
    `nft`; else per pod by the plugin (`ipMasq`, as the reference `bridge`)."""
    if agent_masquerades is None:
        agent_masquerades = agent_socket is not None
    ranges = [[{"subnet": str(ipaddress.ip_network(cidr))}] for cidr in pod_cidrs]
    plugin: dict[str, Any] = {
        "type": "skein",
        "bridge": "cni0",
        "isGateway": True,
        "isDefaultGateway": True,
        "ipMasq": ip_masq and not agent_masquerades,
        "hairpinMode": True,
        "ipam": {"type": "skein-ipam", "ranges": ranges, "dataDir": data_dir},
    }
    if cluster_cidrs:  # also what `skeinctl status` reads the pod network from
        plugin["ipMasqExclude"] = [str(ipaddress.ip_network(c)) for c in cluster_cidrs]
    if mtu:
        plugin["mtu"] = mtu
    if vxlan is not None:
        plugin["vxlan"] = vxlan
    if agent_socket:
        plugin["agentSocket"] = agent_socket
    plugins = [plugin, dict(PORTMAP)] if port_map else [plugin]
    return {"cniVersion": CNI_VERSION, "name": NETWORK_NAME, "plugins": plugins}


def plugin_config(conflist: dict[str, Any], index: int = 0,
                  prev_result: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a runtime puts on a plugin's stdin for entry `index` of a conflist."""
    conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"],
            **conflist["plugins"][index]}
    if prev_result is not None:
        conf["prevResult"] = prev_result
    return conf


def write_atomically(path: str, data: dict[str, Any]) -> bool:
    """Write the conflist `data` as JSON to `path` so a runtime never reads half
    a file; False when the file already holds exactly this content."""
    return files.write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n",
                                  mode=0o644, skip_same=True)
