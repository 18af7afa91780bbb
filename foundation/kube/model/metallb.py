"""MetalLB's CRDs (metallb.io), parsed so that a MetalLB user's YAML works unchanged.

Pool entries are `foundation.addresses.AddressRange`, the type the address allocator
works on, so the controller hands them over as they are.

IPAddressPool, L2Advertisement, BGPAdvertisement, BFDProfile (v1beta1) and
BGPPeer (v1beta1 and v1beta2; their shared fields have the same shape).
Selection follows MetalLB: an advertisement with neither `ipAddressPools` nor
`ipAddressPoolSelectors` covers every pool, an empty `nodeSelectors` covers
every node, an empty `serviceSelectors` every Service, an empty `peers` every
peer.  Defaults are MetalLB's: autoAssign true, holdTime 90s, keepaliveTime a
third of holdTime, peerPort 179, aggregationLength 32 / 128, BFD 300 ms x 3.
Every field of MetalLB's CRDs is read; the two this speaker cannot serve
(BGPPeer `interface`, BGP unnumbered, here; `vrf` in speaker.bgp_plan) are
refused by name rather than ignored, since ignoring a field widens what the
user restricted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from foundation.addresses import AddressRange
from foundation.kube.model.communities import BGPCommunity, parse_community_entry
from foundation.kube.model.fields import Cursor, IPAddress, IPNetwork, ip_address, show
from foundation.kube.model.meta import open_object
from foundation.kube.model.selectors import LabelSelector, matches_any, parse_label_selector

UINT32_MAX = 2**32 - 1


def range_networks(span: AddressRange) -> list[IPNetwork]:
    """The fewest CIDRs covering exactly `span`."""
    return list(ipaddress.summarize_address_range(span.first, span.last))


def range_text(span: AddressRange) -> str:
    """`span` as a MetalLB user would write it: a CIDR when it is one, else "first-last"."""
    nets = range_networks(span)
    return str(nets[0]) if len(nets) == 1 else f"{span.first}-{span.last}"


def parse_address_range(cur: Cursor) -> AddressRange:
    text = cur.string()
    if "-" in text:
        low, _, high = text.partition("-")
        first, last = ip_address(cur, low), ip_address(cur, high)
        if first.version != last.version:
            cur.fail(f"range mixes IPv4 and IPv6: {show(text)}")
        if int(first) > int(last):
            cur.fail(f"range starts after it ends: {show(text)}")
        return AddressRange(first, last)
    try:
        # strict=False as MetalLB's net.ParseCIDR: host bits are dropped.
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        cur.fail(f'expected a CIDR or a range "first-last", got {show(text)}')
    return AddressRange(net.network_address, net.broadcast_address)


@dataclass(frozen=True, slots=True)
class ServiceAllocation:
    priority: int | None = None
    namespaces: tuple[str, ...] = ()
    namespace_selectors: tuple[LabelSelector, ...] = ()
    service_selectors: tuple[LabelSelector, ...] = ()

    def selects(self, namespace: str, namespace_labels: Mapping[str, str],
                service_labels: Mapping[str, str]) -> bool:
        # Namespaces by name or by selector widen each other; no constraint means all.
        by_namespace = (not self.namespaces and not self.namespace_selectors) or (
            namespace in self.namespaces
            or any(s.matches(namespace_labels) for s in self.namespace_selectors))
        return by_namespace and matches_any(self.service_selectors, service_labels)


def _selectors(cur: Cursor) -> tuple[LabelSelector, ...]:
    return tuple(cur.parse(parse_label_selector))


@dataclass(frozen=True, slots=True)
class IPAddressPool:
    namespace: str
    name: str
    addresses: tuple[AddressRange, ...]
    auto_assign: bool = True
    avoid_buggy_ips: bool = False
    service_allocation: ServiceAllocation | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __contains__(self, address: object) -> bool:
        return any(address in r for r in self.addresses)

    def usable(self, address: IPAddress) -> bool:
        """In the pool, and not an IPv4 .0 or .255 when avoidBuggyIPs asks to skip them."""
        if address not in self:
            return False
        if self.avoid_buggy_ips and address.version == 4:
            return address.packed[-1] not in (0, 255)
        return True


def parse_ip_address_pool(doc: Any) -> IPAddressPool:
    obj, meta = open_object(doc, "IPAddressPool", namespaced=True)
    spec = obj.at("spec")
    addresses_cur = spec.at("addresses")
    ranges = addresses_cur.parse(parse_address_range)
    if not ranges:
        addresses_cur.fail("expected at least one CIDR or range")
    # MetalLB refuses a pool whose own ranges overlap; so do we, naming both.
    ordered = sorted(enumerate(ranges), key=lambda p: (p[1].version, int(p[1].first)))
    for (i, a), (j, b) in zip(ordered, ordered[1:], strict=False):
        if a.overlaps(b):
            addresses_cur.fail(f"addresses[{i}] {range_text(a)} overlaps "
                               f"addresses[{j}] {range_text(b)}")
    allocation = None
    alloc_cur = spec.at("serviceAllocation")
    if not alloc_cur.missing:
        allocation = ServiceAllocation(
            priority=alloc_cur.at("priority").opt_integer(0, 2**31 - 1),
            namespaces=alloc_cur.at("namespaces").strings(),
            namespace_selectors=_selectors(alloc_cur.at("namespaceSelectors")),
            service_selectors=_selectors(alloc_cur.at("serviceSelectors")),
        )
    return IPAddressPool(meta.namespace, meta.name, tuple(ranges),
                         spec.at("autoAssign").boolean(True),
                         spec.at("avoidBuggyIPs").boolean(False),
                         allocation, meta.labels)


@dataclass(frozen=True, slots=True)
class PoolSelection:
    """Which pools, nodes and Services an advertisement covers; shared by L2 and BGP."""

    ip_address_pools: tuple[str, ...] = ()
    ip_address_pool_selectors: tuple[LabelSelector, ...] = ()
    node_selectors: tuple[LabelSelector, ...] = ()
    # MetalLB: an advertisement with serviceSelectors covers only the Services
    # whose labels match one of them; without, every Service of its pools.
    service_selectors: tuple[LabelSelector, ...] = ()

    def selects_pool(self, pool: IPAddressPool) -> bool:
        if not self.ip_address_pools and not self.ip_address_pool_selectors:
            return True
        return pool.name in self.ip_address_pools or any(
            s.matches(pool.labels) for s in self.ip_address_pool_selectors)

    def selects_node(self, node_labels: Mapping[str, str]) -> bool:
        return matches_any(self.node_selectors, node_labels)

    def selects_service(self, service_labels: Mapping[str, str]) -> bool:
        return matches_any(self.service_selectors, service_labels)


def _pool_selection(spec: Cursor) -> PoolSelection:
    return PoolSelection(spec.at("ipAddressPools").strings(),
                         _selectors(spec.at("ipAddressPoolSelectors")),
                         _selectors(spec.at("nodeSelectors")),
                         _selectors(spec.at("serviceSelectors")))


@dataclass(frozen=True, slots=True)
class PreferredNodeSelector:
    """A soft preference for the L2 announcer (Kubernetes' PreferredSchedulingTerm)."""

    weight: int
    preference: LabelSelector = LabelSelector()


def _preferred(cur: Cursor) -> PreferredNodeSelector:
    return PreferredNodeSelector(cur.at("weight").integer(1, 100),
                                 parse_label_selector(cur.at("preference")))


@dataclass(frozen=True, slots=True)
class L2Advertisement:
    namespace: str
    name: str
    selection: PoolSelection = PoolSelection()
    interfaces: tuple[str, ...] = ()
    preferred_node_selectors: tuple[PreferredNodeSelector, ...] = ()

    def selects_pool(self, pool: IPAddressPool) -> bool:
        return self.selection.selects_pool(pool)

    def selects_node(self, node_labels: Mapping[str, str]) -> bool:
        return self.selection.selects_node(node_labels)

    def selects_service(self, service_labels: Mapping[str, str]) -> bool:
        return self.selection.selects_service(service_labels)

    def preference(self, node_labels: Mapping[str, str]) -> int:
        """This advertisement's score for a node: the weights of its matching
        preferredNodeSelectors, added up; 0 for a node it does not select (an
        advertisement never lifts a node outside its own nodeSelectors)."""
        if not self.selects_node(node_labels):
            return 0
        return sum(p.weight for p in self.preferred_node_selectors
                   if p.preference.matches(node_labels))


def parse_l2_advertisement(doc: Any) -> L2Advertisement:
    obj, meta = open_object(doc, "L2Advertisement", namespaced=True)
    spec = obj.at("spec")
    return L2Advertisement(meta.namespace, meta.name, _pool_selection(spec),
                           spec.at("interfaces").strings(),
                           tuple(spec.at("preferredNodeSelectors").parse(_preferred)))


@dataclass(frozen=True, slots=True)
class BGPAdvertisement:
    namespace: str
    name: str
    selection: PoolSelection = PoolSelection()
    aggregation_length: int = 32
    aggregation_length_v6: int = 128
    local_pref: int | None = None
    # Literal communities, and alias names (str) for Community objects.
    communities: tuple[BGPCommunity | str, ...] = ()
    peers: tuple[str, ...] = ()

    def selects_pool(self, pool: IPAddressPool) -> bool:
        return self.selection.selects_pool(pool)

    def selects_node(self, node_labels: Mapping[str, str]) -> bool:
        return self.selection.selects_node(node_labels)

    def selects_service(self, service_labels: Mapping[str, str]) -> bool:
        return self.selection.selects_service(service_labels)

    def selects_peer(self, peer_name: str) -> bool:
        return not self.peers or peer_name in self.peers


def parse_bgp_advertisement(doc: Any) -> BGPAdvertisement:
    obj, meta = open_object(doc, "BGPAdvertisement", namespaced=True)
    spec = obj.at("spec")
    selection = _pool_selection(spec)
    v4 = spec.at("aggregationLength").integer(0, 32, 32)
    v6 = spec.at("aggregationLengthV6").integer(0, 128, 128)
    # MetalLB's CRD rule: an aggregate covers other Services' addresses too, so
    # it cannot follow a selection of Services.
    if selection.service_selectors and (v4, v6) != (32, 128):
        spec.at("serviceSelectors").fail(
            "cannot be combined with aggregationLength other than 32 or aggregationLengthV6 "
            "other than 128; drop one of them")
    return BGPAdvertisement(
        meta.namespace, meta.name, selection,
        aggregation_length=v4,
        aggregation_length_v6=v6,
        local_pref=spec.at("localPref").opt_integer(0, UINT32_MAX),
        communities=tuple(spec.at("communities").parse(parse_community_entry)),
        peers=spec.at("peers").strings(),
    )


@dataclass(frozen=True, slots=True)
class BFDProfile:
    """MetalLB's BFDProfile (RFC 5880 session parameters); defaults are MetalLB's."""

    namespace: str
    name: str
    receive_interval_ms: int = 300
    transmit_interval_ms: int = 300
    detect_multiplier: int = 3
    echo_interval_ms: int = 50
    echo_mode: bool = False
    passive_mode: bool = False
    minimum_ttl: int = 254


def parse_bfd_profile(doc: Any) -> BFDProfile:
    """MetalLB's bounds: intervals 10-60000 ms, multiplier 2-255, minimum TTL 1-254."""
    obj, meta = open_object(doc, "BFDProfile", namespaced=True)
    spec = obj.at("spec")
    return BFDProfile(
        meta.namespace, meta.name,
        receive_interval_ms=spec.at("receiveInterval").integer(10, 60000, 300),
        transmit_interval_ms=spec.at("transmitInterval").integer(10, 60000, 300),
        detect_multiplier=spec.at("detectMultiplier").integer(2, 255, 3),
        echo_interval_ms=spec.at("echoInterval").integer(10, 60000, 50),
        echo_mode=spec.at("echoMode").boolean(False),
        passive_mode=spec.at("passiveMode").boolean(False),
        minimum_ttl=spec.at("minimumTtl").integer(1, 254, 254),
    )


@dataclass(frozen=True, slots=True)
class BGPPeer:
    namespace: str
    name: str
    my_asn: int
    peer_asn: int | None  # None with dynamic_asn
    peer_address: IPAddress
    peer_port: int = 179
    hold_time: float = 90.0
    keepalive_time: float = 30.0
    connect_time: float | None = None
    router_id: ipaddress.IPv4Address | None = None
    source_address: IPAddress | None = None
    password: str = ""
    password_secret: str | None = None  # "namespace/name" of a Secret (ClusterState.secret)
    ebgp_multihop: bool = False
    dynamic_asn: str | None = None  # "internal" / "external"
    bfd_profile: str | None = None
    vrf: str | None = None
    enable_graceful_restart: bool = False
    disable_mp: bool = False
    node_selectors: tuple[LabelSelector, ...] = ()
    local_asn: int | None = None  # the AS shown to this peer instead of myASN
    # MetalLB 0.15+: a session carries its own address family only unless this
    # asks for both; disableMP (deprecated) spells that default out.
    dual_stack_address_family: bool = False

    def selects_node(self, node_labels: Mapping[str, str]) -> bool:
        return matches_any(self.node_selectors, node_labels)

    @property
    def ibgp(self) -> bool | None:
        """True for iBGP, False for eBGP, None when the peer's AS is learned (dynamicASN)."""
        if self.peer_asn is None:
            return self.dynamic_asn == "internal" if self.dynamic_asn else None
        return self.peer_asn == self.my_asn


def _timers(spec: Cursor) -> tuple[float, float]:
    hold_cur, keep_cur = spec.at("holdTime"), spec.at("keepaliveTime")
    hold = hold_cur.opt_duration()
    hold = 90.0 if hold is None else hold
    # RFC 4271 4.2: the hold time is zero or at least three seconds.
    if 0 < hold < 3:
        hold_cur.fail(f"expected 0 or at least 3s, got {show(hold_cur.value)}")
    keepalive = keep_cur.opt_duration()
    if keepalive is None:
        keepalive = hold / 3
    elif keepalive > hold:
        keep_cur.fail(f"must not exceed holdTime ({show(keep_cur.value)} > "
                      f"{show(hold_cur.value or '90s')})")
    return hold, keepalive


def parse_bgp_peer(doc: Any) -> BGPPeer:
    obj, meta = open_object(doc, "BGPPeer", namespaced=True)
    spec = obj.at("spec")
    dyn_cur = spec.at("dynamicASN")
    dynamic = None if dyn_cur.missing else dyn_cur.choice(("internal", "external"))
    peer_asn_cur = spec.at("peerASN")
    peer_asn = peer_asn_cur.opt_integer(1, UINT32_MAX)
    if peer_asn is None and dynamic is None:
        peer_asn_cur.fail("required (or set spec.dynamicASN)")
    if peer_asn is not None and dynamic is not None:
        dyn_cur.fail("cannot be combined with spec.peerASN")
    router_cur = spec.at("routerID")
    router_id = router_cur.opt_ip()
    if router_id is not None and not isinstance(router_id, ipaddress.IPv4Address):
        router_cur.fail(f"expected an IPv4 address, got {show(router_cur.value)}")
    secret = spec.at("passwordSecret")
    password = spec.at("password").opt_string() or ""
    if password and not secret.missing:
        secret.fail("cannot be combined with spec.password")
    secret_ref = None
    # MetalLB reads `passwordSecret: {}` (its own CRD generator writes it) as no Secret.
    secret_name = secret.at("name").opt_string()
    if secret_name:
        secret_ref = f"{secret.at('namespace').string(meta.namespace)}/{secret_name}"
    interface = spec.at("interface")
    if interface.opt_string():
        interface.fail("BGP unnumbered is served only by MetalLB's FRR mode, not by this "
                       "speaker; set spec.peerAddress instead")
    dual_stack = spec.at("dualStackAddressFamily").boolean(False)
    disable_mp = spec.at("disableMP").boolean(False)
    if dual_stack and disable_mp:
        spec.at("disableMP").fail("cannot be combined with dualStackAddressFamily: true "
                                  "(disableMP is the deprecated spelling of its default)")
    hold, keepalive = _timers(spec)
    return BGPPeer(
        namespace=meta.namespace,
        name=meta.name,
        my_asn=spec.at("myASN").integer(1, UINT32_MAX),
        peer_asn=peer_asn,
        peer_address=spec.at("peerAddress").ip(),
        peer_port=spec.at("peerPort").integer(1, 65535, 179),
        hold_time=hold,
        keepalive_time=keepalive,
        connect_time=spec.at("connectTime").opt_duration(),
        router_id=router_id,
        source_address=spec.at("sourceAddress").opt_ip(),
        password=password,
        password_secret=secret_ref,
        ebgp_multihop=spec.at("ebgpMultiHop").boolean(False),
        dynamic_asn=dynamic,
        bfd_profile=spec.at("bfdProfile").opt_string() or None,
        vrf=spec.at("vrf").opt_string() or None,
        enable_graceful_restart=spec.at("enableGracefulRestart").boolean(False),
        disable_mp=disable_mp,
        node_selectors=_selectors(spec.at("nodeSelectors")),
        local_asn=spec.at("localASN").opt_integer(1, UINT32_MAX),
        dual_stack_address_family=dual_stack,
    )
