"""Every document of MetalLB's own samples and documentation (../shared/metallb/)
through Skein's model: only what MetalLB itself refuses may be refused, and no
metallb.io kind a user writes is passed over.  Refusals are listed with their
reasons; the tier with a real API server is tests/kube_lab/test_metallb_crds.py."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from foundation.kube.model import (
    BFDProfile,
    ClusterState,
    ModelError,
    PreferredNodeSelector,
    Secret,
    parse_bgp_peer,
    parse_l2_advertisement,
    parse_object,
    parse_secret,
)
from tests.model.metallb_samples import (
    STATUS_KINDS,
    metallb_crds,
    metallb_io,
    refusal,
    samples,
    schemas_of,
)


def outcome(doc: Any) -> str:
    try:
        obj = parse_object(doc)
    except ModelError as exc:
        return f"refused: {exc}"
    return "ignored" if obj is None else "accepted"


def test_every_metallb_sample_is_accepted_unless_metallb_refuses_it() -> None:
    crds = schemas_of(metallb_crds())
    docs = samples()
    assert len([s for s in docs if metallb_io(s)]) >= 79
    report, wrong = [], []
    for sample in docs:
        result = outcome(sample.doc)
        metallb = refusal(sample.doc, crds) if metallb_io(sample) else None
        if result != "accepted":
            report.append(f"{sample}: {result}" + (f" (MetalLB: {metallb})" if metallb else ""))
        if result.startswith("refused") and metallb is None:
            wrong.append(report[-1])
        # A metallb.io kind a user writes must be read, not passed over.
        if metallb_io(sample) and result == "ignored" and sample.doc["kind"] not in STATUS_KINDS:
            wrong.append(report[-1])
    print("\n".join(report))  # what was not accepted, and why: -s shows it
    assert wrong == []
    # What is left over is MetalLB's FRR-only FRRConfiguration and apps/v1 workloads.
    assert {r.split(": ")[0].split(" ")[1] for r in report} <= {"Deployment",
                                                                 "FRRConfiguration"}


def test_what_metallbs_crds_refuse_the_model_refuses_too() -> None:
    """The same objects the CRD oracle refuses (tests/install/test_crds.py), by field."""
    meta = {"name": "x", "namespace": "metallb-system"}
    cases = {
        "spec.detectMultiplier": ("BFDProfile", {"detectMultiplier": 1}),
        "spec.receiveInterval": ("BFDProfile", {"receiveInterval": 60001}),
        "spec.minimumTtl": ("BFDProfile", {"minimumTtl": 255}),
        "spec.serviceSelectors": ("BGPAdvertisement", {
            "aggregationLength": 24, "serviceSelectors": [{"matchLabels": {"a": "b"}}]}),
        "spec.preferredNodeSelectors[0].weight": ("L2Advertisement", {
            "preferredNodeSelectors": [{"weight": 101, "preference": {}}]}),
    }
    for field, (kind, spec) in cases.items():
        with pytest.raises(ModelError) as info:
            parse_object({"apiVersion": "metallb.io/v1beta1", "kind": kind, "metadata": meta,
                          "spec": spec})
        assert info.value.path == field


def peer(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
            "metadata": {"name": "p", "namespace": "metallb-system"},
            "spec": {"myASN": 64512, "peerASN": 65000, "peerAddress": "192.0.2.1", **spec}}


def test_bgppeer_fields_of_metallb_0_15() -> None:
    p = parse_bgp_peer(peer(localASN=65410, dualStackAddressFamily=True, bfdProfile="fast",
                            passwordSecret={"name": "pw"}))
    assert (p.local_asn, p.dual_stack_address_family, p.bfd_profile, p.password_secret) == (
        65410, True, "fast", "metallb-system/pw")
    # MetalLB's own CRD generator writes `passwordSecret: {}` for "none".
    assert parse_bgp_peer(peer(passwordSecret={})).password_secret is None
    with pytest.raises(ModelError, match="spec.interface: BGP unnumbered"):
        parse_object(peer(interface="eth1"))
    with pytest.raises(ModelError, match="spec.disableMP: cannot be combined"):
        parse_object(peer(disableMP=True, dualStackAddressFamily=True))


def test_bfd_profile_defaults_are_metallbs() -> None:
    doc = {"apiVersion": "metallb.io/v1beta1", "kind": "BFDProfile",
           "metadata": {"name": "d", "namespace": "metallb-system"}}
    assert parse_object(doc) == BFDProfile("metallb-system", "d", 300, 300, 3, 50, False, False,
                                           254)


def test_preferred_node_selectors_and_service_selectors_parse() -> None:
    adv = parse_l2_advertisement({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                        "metadata": {"name": "a", "namespace": "metallb-system"},
                        "spec": {"serviceSelectors": [{"matchLabels": {"tier": "web"}}],
                                 "preferredNodeSelectors": [
                                     {"weight": 60, "preference": {"matchLabels": {"z": "a"}}},
                                     {"weight": 50, "preference": {"matchLabels": {"g": "1"}}}]}})
    prefs = adv.preferred_node_selectors
    assert [p.weight for p in prefs] == [60, 50] and isinstance(prefs[0], PreferredNodeSelector)
    assert adv.preference({"z": "a", "g": "1"}) == 110
    assert adv.selects_service({"tier": "web"}) and not adv.selects_service({"tier": "db"})


def secret(type_: str = "kubernetes.io/basic-auth", **body: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": type_,
            "metadata": {"name": "pw", "namespace": "metallb-system"}, **body}


def test_secrets_keep_only_a_basic_auth_password_and_never_show_it() -> None:
    encoded = base64.b64encode(b"hunter2").decode()
    s = parse_object(secret(data={"password": encoded, "username": "dXNlcg=="}))
    assert isinstance(s, Secret) and s.password == "hunter2"
    assert "hunter2" not in repr(s) and encoded not in repr(s)
    assert ClusterState.from_objects([s]).secret("metallb-system", "pw") == s
    # stringData, as a manifests file may hold it, wins over data.
    assert parse_secret(secret(stringData={"password": "x"},
                               data={"password": encoded})).password == "x"
    # Any other type is kept without its data.
    other = parse_object(secret("Opaque", data={"password": encoded}))
    assert isinstance(other, Secret) and other.password is None
    for bad in ({"data": {"password": "not base64!"}}, {"data": "hunter2"},
                {"data": {"password": 12345}}):
        with pytest.raises(ModelError) as info:
            parse_object(secret(**bad))
        assert "hunter2" not in str(info.value) and "12345" not in str(info.value)
        assert "not base64" not in str(info.value)
