"""Helpers for the CNI tests: network configs and pod namespaces."""

from __future__ import annotations

from typing import Any

from lab.netns import Netns

SUBNET4 = "10.77.0.0/24"
SUBNET6 = "fd77::/64"
ALL_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
REFERENCE_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")  # Debian's host-local is v1.1.1


def ipam_conf(ipam_type: str, data_dir: str, subnet: str = SUBNET4,
              subnet6: str | None = None, **extra: Any) -> dict[str, Any]:
    ranges = [[{"subnet": subnet}]]
    if subnet6:
        ranges.append([{"subnet": subnet6}])
    return {"type": ipam_type, "ranges": ranges, "dataDir": data_dir, **extra}


def netconf(data_dir: str, version: str = "1.0.0", ipam_type: str = "skein-ipam",
            subnet: str = SUBNET4, subnet6: str | None = None, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": version,
        "name": "sknet",
        "type": "skein",
        "bridge": "cni0",
        "isGateway": True,
        "isDefaultGateway": True,
        "ipam": ipam_conf(ipam_type, data_dir, subnet, subnet6),
    }
    conf.update(extra)
    return conf


def pod_address(result: dict[str, Any], version: int = 4) -> str:
    for ip in result["ips"]:
        addr = ip["address"].split("/")[0]
        if (":" in addr) == (version == 6):
            return addr
    raise AssertionError(f"no IPv{version} address in {result}")


def lease_files(data_dir: str, network: str = "sknet") -> list[str]:
    import os

    path = os.path.join(data_dir, network)
    if not os.path.isdir(path):
        return []
    return sorted(f for f in os.listdir(path)
                  if f != "lock" and not f.startswith("last_reserved_ip"))


def host_veths(node: Netns) -> list[str]:
    import json

    data = json.loads(node.ip("-j", "link", "show", "type", "veth").stdout)
    return [d["ifname"] for d in data]
