"""Skein's CRDs (install/manifests/10-crds.yaml) against MetalLB's own
(../shared/metallb/crds/): every kind, version and field, with the same types,
defaults, bounds and rules, so that whatever MetalLB's CRDs accept, Skein's
accept, and a field MetalLB adds shows up here as a difference."""

from __future__ import annotations

import copy
from typing import Any

from tests.model.metallb_samples import (
    metallb_crds,
    metallb_io,
    our_crds,
    refusal,
    samples,
    schemas_of,
)

# Keys that decide what a schema accepts, or what the API server stores.
SEMANTIC = ("type", "format", "default", "enum", "minimum", "maximum", "minItems",
            "maxItems", "minLength", "maxLength", "pattern", "nullable",
            "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
            "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string")


def schema_differences(ours: dict[str, Any], theirs: dict[str, Any], path: str = "") -> list[str]:
    where = path or "<root>"
    out = [f"{where}: {key} is {ours.get(key)!r}, MetalLB's {theirs.get(key)!r}"
           for key in SEMANTIC if ours.get(key) != theirs.get(key)]
    if sorted(ours.get("required", [])) != sorted(theirs.get("required", [])):
        out.append(f"{where}: required {sorted(ours.get('required', []))}, MetalLB's "
                   f"{sorted(theirs.get('required', []))}")
    rules = [[r["rule"] for r in s.get("x-kubernetes-validations", [])] for s in (ours, theirs)]
    if sorted(rules[0]) != sorted(rules[1]):
        out.append(f"{where}: rules {rules[0]}, MetalLB's {rules[1]}")
    mine, other = ours.get("properties", {}), theirs.get("properties", {})
    out += [f"{path}.{k}: missing (MetalLB has it)" for k in other if k not in mine]
    out += [f"{path}.{k}: MetalLB has no such field" for k in mine if k not in other]
    for key in mine.keys() & other.keys():
        out += schema_differences(mine[key], other[key], f"{path}.{key}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += schema_differences(a, b, path + suffix)
        elif (a is None) != (b is None):
            out.append(f"{where}: {key} {a!r}, MetalLB's {b!r}")
    return out


def crd_differences(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[str]:
    mine = {c["metadata"]["name"]: c for c in ours}
    out = [f"{name}: missing" for name in sorted({c["metadata"]["name"] for c in theirs}
                                                 - mine.keys())]
    for crd in theirs:
        name = crd["metadata"]["name"]
        if name not in mine:
            continue
        spec, other = mine[name]["spec"], crd["spec"]
        for key in ("group", "scope", "names"):
            if spec[key] != other[key]:
                out.append(f"{name}: {key} {spec[key]!r}, MetalLB's {other[key]!r}")
        versions = {v["name"]: v for v in spec["versions"]}
        for v in other["versions"]:
            where = f"{name} {v['name']}"
            if v["name"] not in versions:
                out.append(f"{where}: missing")
                continue
            ours_v = versions[v["name"]]
            for key in ("served", "storage", "deprecated", "subresources"):
                if ours_v.get(key) != v.get(key):
                    out.append(f"{where}: {key} {ours_v.get(key)!r}, MetalLB's {v.get(key)!r}")
            out += [f"{where} {d}" for d in schema_differences(
                ours_v["schema"]["openAPIV3Schema"], v["schema"]["openAPIV3Schema"])]
        extra = {v["name"] for v in spec["versions"]} - {v["name"] for v in other["versions"]}
        out += [f"{name} {v}: MetalLB has no such version" for v in sorted(extra)]
    return out


def test_our_crds_carry_every_kind_version_and_field_of_metallbs() -> None:
    theirs = metallb_crds()
    assert len(theirs) == 9  # the data is there: the comparison below compares something
    assert crd_differences(our_crds(), theirs) == []


def test_the_comparison_catches_drift() -> None:
    ours = our_crds()
    assert crd_differences(ours, metallb_crds()) == []
    drifted = copy.deepcopy(ours)
    by_name = {c["metadata"]["name"]: c for c in drifted}
    l2 = by_name["l2advertisements.metallb.io"]["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"]
    del l2["properties"]["spec"]["properties"]["serviceSelectors"]
    l2["required"] = ["spec"]
    peer = by_name["bgppeers.metallb.io"]["spec"]["versions"][1]["schema"]["openAPIV3Schema"]
    peer["properties"]["spec"]["properties"]["peerPort"]["maximum"] = 65535
    drifted.remove(by_name["bfdprofiles.metallb.io"])
    assert crd_differences(drifted, metallb_crds()) == [
        "bfdprofiles.metallb.io: missing",
        "bgppeers.metallb.io v1beta2 .spec.peerPort: maximum is 65535, MetalLB's 16384",
        "l2advertisements.metallb.io v1beta1 <root>: required ['spec'], MetalLB's []",
        "l2advertisements.metallb.io v1beta1 .spec.serviceSelectors: missing (MetalLB has it)",
    ]


def test_every_sample_metallbs_crds_accept_ours_accept() -> None:
    """The API-server half without a cluster: the same documents, the same
    checks, our CRDs and MetalLB's.  tests/kube_lab/test_metallb_crds.py does
    it against a real API server."""
    theirs, ours = schemas_of(metallb_crds()), schemas_of(our_crds())
    docs = [s for s in samples() if metallb_io(s)]
    assert len(docs) >= 79
    refused = [f"{s}: {why}" for s in docs
               if refusal(s.doc, theirs) is None and (why := refusal(s.doc, ours))]
    assert refused == []


def test_the_oracle_refuses_what_metallbs_crds_refuse() -> None:
    """Without this the test above could pass by accepting everything."""
    theirs = schemas_of(metallb_crds())
    meta = {"name": "x", "namespace": "metallb-system"}

    def doc(kind: str, spec: dict[str, Any], version: str = "v1beta1") -> dict[str, Any]:
        return {"apiVersion": f"metallb.io/{version}", "kind": kind, "metadata": meta,
                "spec": spec}

    cases = {
        "no spec": {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                    "metadata": meta},
        "multiplier": doc("BFDProfile", {"detectMultiplier": 1}),
        "unknown": doc("L2Advertisement", {"interfacez": ["eth0"]}),
        "aggregate": doc("BGPAdvertisement", {"aggregationLength": 24,
                                              "serviceSelectors": [{"matchLabels": {"a": "b"}}]}),
        "connect": doc("BGPPeer", {"myASN": 1, "peerASN": 2, "peerAddress": "192.0.2.1",
                                   "connectTime": "1500ms"}, "v1beta2"),
        "weight": doc("L2Advertisement", {"preferredNodeSelectors": [
            {"weight": 101, "preference": {}}]}),
    }
    assert {k: refusal(v, theirs) for k, v in cases.items()} == {
        "no spec": ".spec: required",
        "multiplier": ".spec.detectMultiplier: 1 is below the minimum 2",
        "unknown": ".spec.interfacez: unknown field",
        "aggregate": ".spec: serviceSelectors and aggregationLength are mutually exclusive, can "
                     "only be used together with default aggregationLength (32) and "
                     "aggregationLengthV6 (128)",
        "connect": ".spec.connectTime: connect time should contain a whole number of seconds",
        "weight": ".spec.preferredNodeSelectors[0].weight: 101 is above the maximum 100",
    }
