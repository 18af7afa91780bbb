#!/usr/bin/env python3
"""Generate install/manifests/10-crds.yaml: MetalLB's configuration kinds (metallb.io).

Skein reads a MetalLB user's objects unchanged (foundation.kube.model.metallb), so the
CRDs have MetalLB's group, kinds and field names; the schemas are written here
from the fields that model parses, with its bounds.  Each schema is structural
(every node typed, `properties` only on objects, `items` only on arrays), as
apiextensions.k8s.io/v1 requires.

    python3 install/gen_crds.py            # rewrite the manifest
    python3 install/gen_crds.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

GROUP = "metallb.io"
UINT32_MAX = 2**32 - 1
OUTPUT = Path(__file__).resolve().parent / "manifests" / "10-crds.yaml"

Schema = dict[str, Any]


def string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def strings(description: str) -> Schema:
    return {"type": "array", "description": description, "items": {"type": "string"}}


def boolean(description: str, default: bool) -> Schema:
    return {"type": "boolean", "description": description, "default": default}


def integer(description: str, minimum: int, maximum: int, **extra: Any) -> Schema:
    fmt = "int32" if maximum < 2**31 else "int64"
    return {"type": "integer", "format": fmt, "minimum": minimum, "maximum": maximum,
            "description": description, **extra}


def label_selector() -> Schema:
    """metav1.LabelSelector, as the built-in kinds' schemas have it."""
    requirement = {
        "type": "object",
        "required": ["key", "operator"],
        "properties": {
            "key": string("the label key the selector applies to"),
            "operator": string("the key's relationship to the values",
                               enum=["In", "NotIn", "Exists", "DoesNotExist"]),
            "values": strings("values for In and NotIn; empty for Exists and DoesNotExist"),
        },
    }
    return {
        "type": "object",
        "x-kubernetes-map-type": "atomic",
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"},
                            "description": "labels that must all match"},
            "matchExpressions": {"type": "array", "items": requirement,
                                 "description": "requirements that must all hold"},
        },
    }


def selectors(description: str) -> Schema:
    return {"type": "array", "description": description, "items": label_selector()}


def duration(description: str) -> Schema:
    return string(description + ' (a Go duration, e.g. "90s", "1m30s")')


def pool_selection() -> Schema:
    return {
        "ipAddressPools": strings("names of the IPAddressPools to advertise; with neither this "
                                  "nor ipAddressPoolSelectors, every pool"),
        "ipAddressPoolSelectors": selectors("label selectors over the IPAddressPools to "
                                            "advertise"),
        "nodeSelectors": selectors("nodes that announce; empty means every node"),
    }


def ip_address_pool() -> Schema:
    allocation = {
        "type": "object",
        "description": "which Services may take addresses from this pool",
        "properties": {
            "priority": integer("lower is preferred when several pools match", 0, 2**31 - 1),
            "namespaces": strings("namespaces whose Services may use the pool"),
            "namespaceSelectors": selectors("label selectors over those namespaces"),
            "serviceSelectors": selectors("label selectors over those Services"),
        },
    }
    return {
        "type": "object",
        "required": ["addresses"],
        "properties": {
            "addresses": {"type": "array", "minItems": 1, "items": {"type": "string"},
                          "description": 'CIDRs ("192.0.2.0/28") or ranges '
                                         '("192.0.2.10-192.0.2.20"), IPv4 or IPv6'},
            "autoAssign": boolean("hand out addresses to Services that do not ask for one", True),
            "avoidBuggyIPs": boolean("skip IPv4 addresses ending in .0 and .255", False),
            "serviceAllocation": allocation,
        },
    }


def l2_advertisement() -> Schema:
    return {
        "type": "object",
        "properties": {
            **pool_selection(),
            "interfaces": strings("interfaces to announce from; empty means every interface"),
        },
    }


def bgp_advertisement() -> Schema:
    return {
        "type": "object",
        "properties": {
            **pool_selection(),
            "aggregationLength": integer("prefix length announced for IPv4 addresses",
                                         0, 32, default=32),
            "aggregationLengthV6": integer("prefix length announced for IPv6 addresses",
                                           0, 128, default=128),
            "localPref": integer("BGP LOCAL_PREF of the announcements (iBGP only)",
                                 0, UINT32_MAX),
            "communities": strings('communities: "65535:65282", "large:1:2:3", a well-known '
                                   'name ("no-export") or the name of a Community alias'),
            "peers": strings("names of the BGPPeers to announce to; empty means every peer"),
        },
    }


def bgp_peer(version: str) -> Schema:
    properties: Schema = {
        "myASN": integer("the AS number the speaker uses", 1, UINT32_MAX),
        "peerASN": integer("the peer's AS number", 1, UINT32_MAX),
        "peerAddress": string("the peer's IPv4 or IPv6 address"),
        "peerPort": integer("the peer's TCP port", 1, 65535, default=179),
        "sourceAddress": string("the local address of the session"),
        "routerID": string("BGP router ID (IPv4 address notation) to advertise"),
        "holdTime": duration("BGP hold time; 0 or at least 3s"),
        "keepaliveTime": duration("keepalive interval; at most holdTime"),
        "password": string("TCP MD5 password (prefer passwordSecret)"),
        "bfdProfile": string("name of a BFD profile"),
        "ebgpMultiHop": boolean("the eBGP peer is several hops away", False),
        "nodeSelectors": selectors("nodes that peer with this router; empty means every node"),
    }
    if version == "v1beta2":
        properties.update({
            "dynamicASN": string("learn the peer's AS from its OPEN instead of peerASN",
                                 enum=["internal", "external"]),
            "connectTime": duration("how long a TCP connection attempt may take"),
            "passwordSecret": {
                "type": "object",
                "x-kubernetes-map-type": "atomic",
                "description": "a kubernetes.io/basic-auth Secret holding the TCP MD5 password",
                "properties": {"name": string("the Secret's name"),
                               "namespace": string("the Secret's namespace")},
            },
            "vrf": string("the VRF to open the session from"),
            "enableGracefulRestart": boolean("BGP graceful restart (RFC 4724)", False),
            "disableMP": boolean("one session per address family", False),
        })
        return {
            "type": "object",
            "required": ["myASN", "peerAddress"],
            "properties": properties,
            "x-kubernetes-validations": [
                {"rule": "has(self.peerASN) || has(self.dynamicASN)",
                 "message": "peerASN or dynamicASN is required"},
                {"rule": "!(has(self.peerASN) && has(self.dynamicASN))",
                 "message": "peerASN and dynamicASN are mutually exclusive"},
                {"rule": "!(has(self.password) && has(self.passwordSecret))",
                 "message": "password and passwordSecret are mutually exclusive"},
            ],
        }
    return {"type": "object", "required": ["myASN", "peerASN", "peerAddress"],
            "properties": properties}


def community() -> Schema:
    alias = {
        "type": "object",
        "required": ["name", "value"],
        "properties": {
            "name": string("the alias, usable in BGPAdvertisement.spec.communities"),
            "value": string('"65535:65282" or "large:1:2:3"'),
        },
    }
    return {"type": "object",
            "properties": {"communities": {"type": "array", "items": alias,
                                           "description": "community aliases"}}}


def version(name: str, spec: Schema, *, storage: bool = True, columns: list[Schema] | None = None,
            deprecated: str | None = None) -> Schema:
    out: Schema = {
        "name": name,
        "served": True,
        "storage": storage,
        "schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": spec,
            },
            "required": ["spec"],
        }},
    }
    if deprecated:
        out["deprecated"] = True
        out["deprecationWarning"] = deprecated
    if columns:
        out["additionalPrinterColumns"] = columns
    return out


def column(name: str, path: str, type_: str = "string", priority: int = 0) -> Schema:
    out: Schema = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        out["priority"] = priority
    return out


def crd(kind: str, plural: str, versions: list[Schema], short: list[str] | None = None) -> Schema:
    names: Schema = {"kind": kind, "listKind": kind + "List", "plural": plural,
                     "singular": kind.lower()}
    if short:
        names["shortNames"] = short
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}",
                     "labels": {"app.kubernetes.io/part-of": "skein"}},
        "spec": {"group": GROUP, "scope": "Namespaced", "names": names, "versions": versions},
    }


def crds() -> list[Schema]:
    age = column("Age", ".metadata.creationTimestamp", "date")
    return [
        crd("IPAddressPool", "ipaddresspools", [version("v1beta1", ip_address_pool(), columns=[
            column("Auto Assign", ".spec.autoAssign", "boolean"),
            column("Avoid Buggy IPs", ".spec.avoidBuggyIPs", "boolean"),
            column("Addresses", ".spec.addresses"), age])]),
        crd("L2Advertisement", "l2advertisements", [version("v1beta1", l2_advertisement(),
            columns=[column("IPAddressPools", ".spec.ipAddressPools"),
                     column("Interfaces", ".spec.interfaces", priority=1), age])]),
        crd("BGPAdvertisement", "bgpadvertisements", [version("v1beta1", bgp_advertisement(),
            columns=[column("IPAddressPools", ".spec.ipAddressPools"),
                     column("Peers", ".spec.peers", priority=1), age])]),
        crd("BGPPeer", "bgppeers", [
            version("v1beta1", bgp_peer("v1beta1"), storage=False,
                    deprecated="metallb.io/v1beta1 BGPPeer is deprecated, use metallb.io/v1beta2"),
            version("v1beta2", bgp_peer("v1beta2"), columns=[
                column("Address", ".spec.peerAddress"), column("ASN", ".spec.peerASN", "integer"),
                column("My ASN", ".spec.myASN", "integer", priority=1), age]),
        ]),
        crd("Community", "communities", [version("v1beta1", community())]),
    ]


HEADER = """\
# Generated by install/gen_crds.py: edit that, then run it.
# MetalLB's configuration kinds (group metallb.io), so MetalLB users' objects apply
# unchanged.  Do not install these next to MetalLB itself: the names are the same.
"""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # a manifest spells every schema out


def render() -> str:
    body = "---\n".join(yaml.dump(c, Dumper=_Dumper, sort_keys=False, width=100)
                        for c in crds())
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="generate " + OUTPUT.name)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python3 install/gen_crds.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
