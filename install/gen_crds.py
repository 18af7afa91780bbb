#!/usr/bin/env python3
"""Generate install/manifests/10-crds.yaml: MetalLB's kinds (metallb.io).

Skein reads a MetalLB user's objects unchanged (foundation.kube.model.metallb), so the
CRDs have MetalLB's group, kinds, versions and field names, and accept what
MetalLB's own CRDs accept: the same fields, types, defaults and bounds (no
stricter: a value MetalLB's CRD lets through and its controller refuses is
refused by Skein's model too, with the field named, in an event and a log
line).  tests/install/test_crds.py compares them field by field with MetalLB's
(../shared/metallb/crds/).  The text is Skein's own.  Each schema is structural
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


def strings(description: str, **extra: Any) -> Schema:
    return {"type": "array", "description": description, "items": {"type": "string"}, **extra}


def boolean(description: str, default: bool | None = None, **extra: Any) -> Schema:
    out: Schema = {"type": "boolean", "description": description, **extra}
    if default is not None:
        out["default"] = default
    return out


def integer(description: str, minimum: int | None = None, maximum: int | None = None,
            fmt: str | None = None, **extra: Any) -> Schema:
    out: Schema = {"type": "integer", "description": description}
    if fmt:
        out["format"] = fmt
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    return {**out, **extra}


def obj(description: str, properties: Schema, required: list[str] | None = None,
        **extra: Any) -> Schema:
    out: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        out["required"] = required
    return {**out, **extra}


def label_selector(description: str, *, values_required: bool = False) -> Schema:
    """metav1.LabelSelector.  The operator is not an enum here: MetalLB's CRDs
    accept any string and refuse a bad one when the configuration is read, and
    so does Skein (foundation.kube.model.selectors names the field)."""
    values = strings("values for In and NotIn; empty for Exists and DoesNotExist")
    required = ["key", "operator"]
    if values_required:  # BGPPeer v1beta1's older shape
        values["minItems"] = 1
        required.append("values")
    else:
        values["x-kubernetes-list-type"] = "atomic"
    expressions: Schema = {
        "type": "array", "description": "requirements that must all hold",
        "items": obj("one requirement on a label", {
            "key": string("the label key the requirement is about"),
            "operator": string("In, NotIn, Exists or DoesNotExist"),
            "values": values,
        }, required)}
    if not values_required:
        expressions["x-kubernetes-list-type"] = "atomic"
    out = obj(description, {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "labels that must all match"},
        "matchExpressions": expressions,
    })
    if not values_required:
        out["x-kubernetes-map-type"] = "atomic"
    return out


def extended(schema: Schema, **extra: Any) -> Schema:
    """`schema` with Kubernetes' x-kubernetes-* keys (spelled with _ here)."""
    return {**schema, **{"x-kubernetes-" + k.replace("_", "-"): v for k, v in extra.items()}}


def selectors(description: str, **kw: Any) -> Schema:
    return {"type": "array", "description": description,
            "items": label_selector("a label selector", **kw)}


def duration(description: str, **extra: Any) -> Schema:
    return string(description + ' (a Go duration, e.g. "90s", "1m30s")', **extra)


def pool_selection() -> Schema:
    return {
        "ipAddressPools": strings("names of the IPAddressPools to advertise; with neither this "
                                  "nor ipAddressPoolSelectors, every pool"),
        "ipAddressPoolSelectors": selectors("label selectors over the IPAddressPools to "
                                            "advertise"),
        "nodeSelectors": selectors("nodes that announce; empty means every node"),
        "serviceSelectors": selectors("Services this advertisement covers, by their labels; "
                                      "empty means every Service of its pools"),
    }


def ip_address_pool() -> Schema:
    allocation = obj("which Services may take addresses from this pool", {
        "priority": integer("lower is preferred when several pools match"),
        "namespaces": strings("namespaces whose Services may use the pool"),
        "namespaceSelectors": selectors("label selectors over those namespaces"),
        "serviceSelectors": selectors("label selectors over those Services"),
    })
    return obj("the addresses of the pool and how they are handed out", {
        "addresses": strings('CIDRs ("192.0.2.0/28") or ranges ("192.0.2.10-192.0.2.20"), '
                             "IPv4 or IPv6"),
        "autoAssign": boolean("hand out addresses to Services that do not ask for one", True),
        "avoidBuggyIPs": boolean("skip IPv4 addresses ending in .0 and .255", False),
        "serviceAllocation": allocation,
    }, ["addresses"])


def l2_advertisement() -> Schema:
    preferred = obj("a weighted preference for announcing nodes", {
        "weight": integer("added to the score of the nodes the preference selects",
                          1, 100, "int32"),
        "preference": label_selector("the nodes this weight is for"),
    }, ["preference", "weight"])
    return obj("which addresses are announced by ARP/NDP, from where", {
        **pool_selection(),
        "interfaces": strings("interfaces to announce from; empty means every interface"),
        "preferredNodeSelectors": {
            "type": "array", "items": preferred,
            "description": "soft preferences for the announcing node: the live eligible node "
                           "with the highest total weight announces"},
    })


AGGREGATION_RULE = (
    "!has(self.serviceSelectors) || self.serviceSelectors.size() == 0 || "
    "((!has(self.aggregationLength) || self.aggregationLength == 32) && "
    "(!has(self.aggregationLengthV6) || self.aggregationLengthV6 == 128))")


def bgp_advertisement() -> Schema:
    return extended(obj("which addresses are announced by BGP, to whom, with which attributes", {
        **pool_selection(),
        "aggregationLength": integer("prefix length announced for IPv4 addresses", 1,
                                     fmt="int32", default=32),
        "aggregationLengthV6": integer("prefix length announced for IPv6 addresses",
                                       fmt="int32", default=128),
        "localPref": integer("BGP LOCAL_PREF of the announcements (iBGP only)", fmt="int32"),
        "communities": strings('communities: "65535:65282", "large:1:2:3", or the name of '
                               "a Community alias"),
        "peers": strings("names of the BGPPeers to announce to; empty means every peer"),
    }), validations=[{
        "rule": AGGREGATION_RULE,
        "message": "serviceSelectors select Services, an aggregate covers other Services' "
                   "addresses too: use them only with aggregationLength 32 and "
                   "aggregationLengthV6 128"}])


def bgp_peer(version: str) -> Schema:
    v1 = version == "v1beta1"
    properties: Schema = {
        "myASN": integer("the AS number the speaker uses", 0, UINT32_MAX, "int64"),
        "peerASN": integer("the peer's AS number", 0, UINT32_MAX, "int64"),
        "peerAddress": string("the peer's IPv4 or IPv6 address"),
        "peerPort": (integer("the peer's TCP port", 0, 16384) if v1 else
                     integer("the peer's TCP port", 1, 16384, default=179)),
        "sourceAddress": string("the local address of the session"),
        "routerID": string("BGP router ID (IPv4 address notation) to advertise"),
        "holdTime": duration("BGP hold time; 0 or at least 3s"),
        "keepaliveTime": duration("keepalive interval; at most holdTime"),
        "password": string("TCP MD5 password (prefer passwordSecret)"),
        "bfdProfile": string("name of the BFDProfile that ties a BFD session to this one"),
        "ebgpMultiHop": boolean("the peer is several hops away"),
        "nodeSelectors": selectors("nodes that peer with this router; empty means every node",
                                   values_required=v1),
    }
    if v1:
        return obj("a BGP router the nodes peer with", properties,
                   ["myASN", "peerASN", "peerAddress"])
    properties.update({
        "dynamicASN": string("learn the peer's AS from its OPEN instead of peerASN: internal "
                             "(must equal myASN) or external (must differ)",
                             enum=["internal", "external"]),
        "localASN": integer("the AS number shown to this peer instead of myASN", 1,
                            UINT32_MAX, "int64"),
        "interface": string("BGP unnumbered over this node interface (MetalLB's FRR mode "
                            "only; refused by Skein's speaker)"),
        "connectTime": extended(duration("how long a TCP connection attempt may take"),
                                validations=[
                {"rule": "duration(self).getSeconds() >= 1 && "
                         "duration(self).getSeconds() <= 65535",
                 "message": "connectTime must be 1s to 65535s"},
                {"rule": "duration(self).getMilliseconds() % 1000 == 0",
                 "message": "connectTime must be whole seconds"}]),
        "passwordSecret": extended(obj(
            "a kubernetes.io/basic-auth Secret whose password key is the TCP MD5 password", {
                                  "name": string("the Secret's name"),
                                  "namespace": string("the Secret's namespace")}),
                              map_type="atomic"),
        "vrf": string("the VRF to open the session from (MetalLB's FRR mode only; refused "
                      "by Skein's speaker)"),
        "enableGracefulRestart": extended(boolean("BGP graceful restart (RFC 4724)"),
                                          validations=[{"rule": "self == oldSelf",
                                                        "message": "enableGracefulRestart is "
                                                        "fixed once the BGPPeer exists"}]),
        "disableMP": boolean("deprecated: one address family per session, now the default",
                             False),
        "dualStackAddressFamily": boolean("carry both IPv4 and IPv6 routes over this session "
                                          "(default: its peer address's family only)", False),
    })
    return obj("a BGP router the nodes peer with", properties, ["myASN"])


def community() -> Schema:
    alias = obj("one alias", {
        "name": string("the alias, usable in BGPAdvertisement.spec.communities"),
        "value": string('"65535:65282" or "large:1:2:3"'),
    })
    return obj("community aliases", {"communities": {"type": "array", "items": alias,
                                                     "description": "community aliases"}})


def bfd_profile() -> Schema:
    def interval(what: str) -> Schema:
        return integer(f"{what}, in milliseconds", 10, 60000, "int32")
    return obj("BFD session parameters (RFC 5880) for BGPPeers that name this profile", {
        "receiveInterval": interval("the slowest rate we accept BFD packets at"),
        "transmitInterval": interval("the fastest rate we send BFD packets at"),
        "detectMultiplier": integer("missed packets before the session is down", 2, 255,
                                    "int32"),
        "echoInterval": interval("the echo packet interval"),
        "echoMode": boolean("use echo packets"),
        "passiveMode": boolean("wait for the peer to start the session"),
        "minimumTtl": integer("lowest TTL accepted on incoming BFD packets", 1, 254, "int32"),
    })


def condition() -> Schema:
    """metav1.Condition, as in every CRD with conditions."""
    return obj("one condition", {
        "type": string("the condition's type", maxLength=316, pattern=(
            r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")),
        "status": string("True, False or Unknown", enum=["True", "False", "Unknown"]),
        "observedGeneration": integer("the generation the condition was computed for", 0,
                                      fmt="int64"),
        "lastTransitionTime": string("when the status last changed", format="date-time"),
        "reason": string("a CamelCase reason", maxLength=1024, minLength=1,
                         pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
        "message": string("what happened, for people", maxLength=32768),
    }, ["lastTransitionTime", "message", "reason", "status", "type"])


def immutable(description: str) -> Schema:
    return extended(string(description),
                    validations=[{"rule": "self == oldSelf", "message": "cannot be changed"}])


def status_of(kind: str) -> Schema:
    if kind == "IPAddressPool":
        count = integer("a number of addresses", fmt="int64")
        return obj("how much of the pool is in use", {
            "assignedIPv4": count, "assignedIPv6": count,
            "availableIPv4": count, "availableIPv6": count,
        }, ["assignedIPv4", "assignedIPv6", "availableIPv4", "availableIPv6"])
    if kind == "ConfigurationState":
        return obj("whether the configuration was accepted", {
            "conditions": {"type": "array", "items": condition(),
                           "x-kubernetes-list-map-keys": ["type"],
                           "x-kubernetes-list-type": "map",
                           "description": "the latest observations"},
            "errorSummary": string("the errors found, if any"),
            "result": string("Valid, Invalid or Unknown", enum=["Valid", "Invalid", "Unknown"]),
        })
    if kind in ("ServiceL2Status", "ServiceBGPStatus"):
        fields: Schema = {
            "node": immutable("the node announcing"),
            "serviceName": immutable("the Service's name"),
            "serviceNamespace": immutable("the Service's namespace"),
        }
        if kind == "ServiceL2Status":
            fields["interfaces"] = {"type": "array", "description": "where it is announced",
                                    "items": obj("an interface", {
                                        "name": string("the interface's name")})}
        else:
            fields["peers"] = strings("the BGPPeers it is announced to")
        return obj("who announces a Service, and where", fields)
    return {"type": "object", "description": "observed state (none is reported)"}


def version(name: str, kind: str, spec: Schema | None, *, storage: bool = True,
            columns: list[Schema] | None = None, deprecated: str | None = None,
            spec_required: bool = False) -> Schema:
    properties: Schema = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
    }
    if spec is not None:
        properties["spec"] = spec
    properties["status"] = status_of(kind)
    root: Schema = {"type": "object", "properties": properties}
    if spec_required:  # MetalLB requires a spec of IPAddressPool only
        root["required"] = ["spec"]
    out: Schema = {"name": name, "served": True, "storage": storage,
                   "schema": {"openAPIV3Schema": root},
                   "subresources": {"status": {}}}
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
    empty = {"type": "object", "description": "none: everything is in status"}
    status_columns = [column("Node", ".status.node"),
                      column("Service Name", ".status.serviceName"),
                      column("Service Namespace", ".status.serviceNamespace")]
    return [
        crd("IPAddressPool", "ipaddresspools", [version(
            "v1beta1", "IPAddressPool", ip_address_pool(), spec_required=True, columns=[
                column("Auto Assign", ".spec.autoAssign", "boolean"),
                column("Avoid Buggy IPs", ".spec.avoidBuggyIPs", "boolean"),
                column("Addresses", ".spec.addresses"), age])]),
        crd("L2Advertisement", "l2advertisements", [version(
            "v1beta1", "L2Advertisement", l2_advertisement(), columns=[
                column("IPAddressPools", ".spec.ipAddressPools"),
                column("Interfaces", ".spec.interfaces", priority=1), age])]),
        crd("BGPAdvertisement", "bgpadvertisements", [version(
            "v1beta1", "BGPAdvertisement", bgp_advertisement(), columns=[
                column("IPAddressPools", ".spec.ipAddressPools"),
                column("Peers", ".spec.peers", priority=1), age])]),
        crd("BGPPeer", "bgppeers", [
            version("v1beta1", "BGPPeer", bgp_peer("v1beta1"), storage=False,
                    deprecated="metallb.io/v1beta1 BGPPeer is deprecated, use metallb.io/v1beta2"),
            version("v1beta2", "BGPPeer", bgp_peer("v1beta2"), columns=[
                column("Address", ".spec.peerAddress"), column("ASN", ".spec.peerASN", "integer"),
                column("BFD Profile", ".spec.bfdProfile"),
                column("My ASN", ".spec.myASN", "integer", priority=1), age]),
        ]),
        crd("Community", "communities", [version("v1beta1", "Community", community())]),
        crd("BFDProfile", "bfdprofiles", [version(
            "v1beta1", "BFDProfile", bfd_profile(), columns=[
                column("Passive Mode", ".spec.passiveMode", "boolean"),
                column("Transmit Interval", ".spec.transmitInterval", "integer"),
                column("Receive Interval", ".spec.receiveInterval", "integer"),
                column("Multiplier", ".spec.detectMultiplier", "integer")])]),
        crd("ConfigurationState", "configurationstates", [version(
            "v1beta1", "ConfigurationState", None, columns=[
                column("Result", ".status.result"),
                column("Errors", ".status.errorSummary"), age])]),
        crd("ServiceL2Status", "servicel2statuses", [version(
            "v1beta1", "ServiceL2Status", empty, columns=status_columns)]),
        crd("ServiceBGPStatus", "servicebgpstatuses", [version(
            "v1beta1", "ServiceBGPStatus", empty, columns=status_columns)]),
    ]


HEADER = """\
# Generated by install/gen_crds.py: edit that, then run it.
# MetalLB's kinds (group metallb.io), so MetalLB users' objects apply
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
