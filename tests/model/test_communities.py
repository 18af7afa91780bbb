"""BGP communities read as MetalLB reads them (foundation.kube.model.communities):
values "A:B" and "large:A:B:C", every other text the name of an alias a Community
object defines, and no built-in names, not even RFC 1997's well-known ones.

MetalLB's rules, from its source (internal/bgp/community.New, internal/config
getCommunityValue, communitiesFromCrs) and its CRDs' descriptions: a value splits
on ":" into 2 decimal uint16 parts or 4 parts the first of which is "large" and
the others decimal uint32; anything else is looked up as an alias (an unknown
one fails the configuration); an alias's value must be a value; a name defined
twice fails it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from foundation.kube.model import (
    BGPCommunity,
    ClusterState,
    ModelError,
    parse_bgp_advertisement,
    parse_community,
    parse_object,
)
from foundation.kube.sources import parse_manifests

# MetalLB's configsamples/bgpadvertisement_community_alias.yaml and, below it,
# the Community of its "Advanced BGP configuration" page, as they are (unquoted
# 1234:1 included: Kubernetes reads YAML without base-60 numbers).
METALLB_SAMPLES = """\
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  namespace: metallb-system
  name: advertisement
spec:
  communities:
  - NO_ADVERTISE
  ipAddressPools:
  - bgp-with-advertisement
  localPref: 150
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata:
  name: community1
  namespace: metallb-system
spec:
  communities:
  - name: NO_ADVERTISE
    value: 65535:65282
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata:
  name: communities
  namespace: metallb-system
spec:
  communities:
  - name: vpn-only
    value: 1234:1
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata:
  name: local
  namespace: metallb-system
spec:
  communities:
  - vpn-only
"""


def advertisement(*communities: Any, name: str = "a") -> dict[str, Any]:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": {"communities": list(communities)}}


def community(name: str, **aliases: str) -> dict[str, Any]:
    return {"apiVersion": "metallb.io/v1beta1", "kind": "Community",
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": {"communities": [{"name": k, "value": v} for k, v in aliases.items()]}}


def state(*docs: dict[str, Any]) -> ClusterState:
    return ClusterState.from_objects(o for o in (parse_object(d) for d in docs) if o is not None)


def resolved(st: ClusterState, name: str = "a") -> list[str]:
    adv = next(a for a in st.bgp_advertisements if a.name == name)
    return [str(c) for c in st.communities_for(adv)]


def test_metallbs_own_samples_resolve() -> None:
    parsed = parse_manifests(METALLB_SAMPLES)
    assert parsed.errors == []
    assert resolved(parsed.state, "advertisement") == ["65535:65282"]
    assert resolved(parsed.state, "local") == ["1234:1"]


@pytest.mark.parametrize(("text", "parts"), [
    ("65535:65282", (65535, 65282)),
    ("0:0", (0, 0)),
    ("007:08", (7, 8)),  # leading zeros, as Go's strconv.ParseUint takes them
    ("large:4294967295:0:1", (4294967295, 0, 1)),
])
def test_values(text: str, parts: tuple[int, ...]) -> None:
    assert parse_community(text) == BGPCommunity(parts)
    adv = parse_bgp_advertisement(advertisement(text))
    assert adv.communities == (BGPCommunity(parts),)


def test_wire_values() -> None:
    assert parse_community("65535:65282").value == 0xFFFFFF02
    with pytest.raises(ValueError, match="large community"):
        _ = parse_community("large:1:2:3").value


@pytest.mark.parametrize(("text", "why"), [
    ("65536:1", "each part must fit in 16 bits"),
    ("a:b", "expected A:B with decimal parts"),
    ("1:-2", "expected A:B with decimal parts"),
    (" 1:2", "expected A:B with decimal parts"),  # MetalLB trims nothing either
    ("1:²", "expected A:B with decimal parts"),
    ("large:4294967296:0:0", "each part must fit in 32 bits"),
    ("LARGE:1:2:3", "expected large:A:B:C for a large community"),
    ("x:1:2:3", "expected large:A:B:C for a large community"),
])
def test_bad_values_are_errors_naming_the_field(text: str, why: str) -> None:
    with pytest.raises(ModelError) as err:
        parse_bgp_advertisement(advertisement("1:1", text))
    assert str(err.value).startswith(
        f"BGPAdvertisement metallb-system/a: spec.communities[1]: {why}, got ")
    with pytest.raises(ValueError, match=why):
        parse_community(text)


@pytest.mark.parametrize("name", ["no-export", "NO_EXPORT", "no-advertise", "NO_ADVERTISE",
                                  "blackhole", "graceful-shutdown", "local-as"])
def test_well_known_names_are_not_built_in(name: str) -> None:
    """MetalLB has no names of its own: without a Community defining it, a
    well-known community's name is an unknown alias and the advertisement is
    not announced (bgp_plan drops it), as MetalLB refuses such a configuration."""
    with pytest.raises(ValueError):
        parse_community(name)
    st = state(advertisement(name))
    with pytest.raises(ModelError, match=f'spec.communities\\[0\\]: no Community object '
                                         f'defines "{name}"$'):
        resolved(st)
    assert st.problems()
    # Named by a Community, it is whatever that Community says.
    assert resolved(state(advertisement(name), community("c", **{name: "65535:65281"}))) == [
        "65535:65281"]


def test_names_are_exact() -> None:
    st = state(advertisement("No_Advertise"), community("c", NO_ADVERTISE="65535:65282"))
    with pytest.raises(ModelError, match='no Community object defines "No_Advertise"'):
        resolved(st)


@pytest.mark.parametrize("text", ["1:2:3", "large:1:2", "1234", "65535"])
def test_other_shapes_are_alias_names(text: str) -> None:
    """Two or four parts are a value; any other count is a name (MetalLB: an
    alias that may be defined later)."""
    assert parse_bgp_advertisement(advertisement(text)).communities == (text,)
    assert resolved(state(advertisement(text), community("c", **{text: "1:2"}))) == ["1:2"]
    hint = " (nor is it a community value, A:B or large:A:B:C)" if ":" in text else ""
    with pytest.raises(ModelError) as err:
        resolved(state(advertisement(text)))
    assert str(err.value).endswith(f'no Community object defines "{text}"{hint}')


def test_an_alias_value_must_be_a_value() -> None:
    for value, why in (("vpn-only", 'not a name ("vpn-only")'),
                       ("65536:0", "each part must fit in 16 bits")):
        with pytest.raises(ModelError, match=r"^Community metallb-system/c: "
                                             r"spec\.communities\[0\]\.value: .*" + re.escape(why)):
            parse_object(community("c", x=value))


def test_an_alias_defined_twice_is_refused() -> None:
    doc = community("c")
    doc["spec"]["communities"] = [{"name": "x", "value": "1:1"}, {"name": "x", "value": "1:1"}]
    with pytest.raises(ModelError, match=r'spec\.communities\[1\]\.name: "x" is defined '
                                         r'twice \(also spec\.communities\[0\]\)'):
        parse_object(doc)
    # In two Community objects: a problem, and the name resolves to neither value.
    st = state(advertisement("x"), community("c1", x="1:1"), community("c2", x="2:2"))
    with pytest.raises(ModelError, match=r'"x" is defined by more than one Community '
                                         r'\(metallb-system/c1, metallb-system/c2\)'):
        resolved(st)
    assert ('Community metallb-system/c2: spec.communities: alias "x" is defined by '
            'Community metallb-system/c1 too') in [str(p) for p in st.problems()]
