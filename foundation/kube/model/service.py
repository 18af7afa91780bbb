"""Service: what the controller allocates for and the speaker announces.

MetalLB users steer allocation with annotations; both the historical
`metallb.universe.tf/...` keys and the newer `metallb.io/...` keys are read, so
a user's existing manifests work unchanged.  Where MetalLB refuses a
combination (spec.loadBalancerIP together with the loadBalancerIPs annotation),
so does this parser, naming the fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from foundation.kube.model.fields import (
    Cursor,
    IPAddress,
    Irregular,
    choices,
    ip_address,
    parse_ip,
    quick_choice,
    quick_integer,
    quick_ip,
    quick_list,
    quick_mapping,
    quick_opt_integer,
    quick_opt_ip,
    quick_opt_string,
    shared_value,
    show,
)
from foundation.kube.model.meta import open_object, quick_meta

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
PROTOCOLS = ("TCP", "UDP", "SCTP")
IP_FAMILIES = ("IPv4", "IPv6")

# The annotation families, newest spelling first.
ANNOTATION_PREFIXES = ("metallb.io/", "metallb.universe.tf/")
LB_IPS = "loadBalancerIPs"
ADDRESS_POOL = "address-pool"
ALLOW_SHARED_IP = "allow-shared-ip"


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    protocol: str = "TCP"
    name: str = ""
    node_port: int | None = None
    target_port: int | str | None = None


class _KeyCache:
    """Room for Service.key, made on first use: with slots there is no __dict__
    for a cached_property.  Not a field, so neither compared, shown nor pickled."""

    __slots__ = ("_key",)
    _key: str


@dataclass(frozen=True, slots=True)
class Service(_KeyCache):
    namespace: str
    name: str
    type: str = "ClusterIP"
    cluster_ips: tuple[IPAddress, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    external_traffic_policy: str = "Cluster"
    # Addresses the user asked for: spec.loadBalancerIP or the annotation.
    requested_ips: tuple[IPAddress, ...] = ()
    address_pool: str | None = None
    allow_shared_ip: str | None = None
    load_balancer_class: str | None = None
    ingress_ips: tuple[IPAddress, ...] = ()
    external_ips: tuple[IPAddress, ...] = ()
    ip_families: tuple[str, ...] = ()
    ip_family_policy: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Made with the object: plans ask for the key per address and per route.
        object.__setattr__(self, "_key", f"{self.namespace}/{self.name}")

    @property
    def key(self) -> str:
        """namespace/name, the way MetalLB and kubectl name a service."""
        try:  # an unpickled Service has no _key: __post_init__ did not run
            return self._key
        except AttributeError:
            key = f"{self.namespace}/{self.name}"
            object.__setattr__(self, "_key", key)
            return key

    @property
    def is_load_balancer(self) -> bool:
        return self.type == "LoadBalancer"

    @property
    def local_traffic_policy(self) -> bool:
        return self.external_traffic_policy == "Local"


def metallb_annotation(annotations: Mapping[str, str], cur: Cursor, suffix: str) -> str | None:
    """The value of metallb.io/<suffix> or metallb.universe.tf/<suffix>.

    Both set to different values is an error: either choice would surprise
    someone half-way through renaming them.
    """
    found = {p + suffix: annotations[p + suffix].strip()
             for p in ANNOTATION_PREFIXES if p + suffix in annotations}
    if len(set(found.values())) > 1:
        new, old = (p + suffix for p in ANNOTATION_PREFIXES)
        cur.at(new).fail(f"disagrees with {old} ({show(found[new])} vs {show(found[old])})")
    return next(iter(found.values()), None) or None


def _parse_port(cur: Cursor) -> ServicePort:
    target: int | str | None = None
    target_cur = cur.at("targetPort")
    if isinstance(target_cur.value, str):
        target = target_cur.string()
    elif not target_cur.missing:
        target = target_cur.integer(1, 65535)
    return ServicePort(
        port=cur.at("port").integer(1, 65535),
        protocol=cur.at("protocol").choice(PROTOCOLS, "TCP"),
        name=cur.at("name").opt_string() or "",
        node_port=cur.at("nodePort").opt_integer(1, 65535),
        target_port=target,
    )


def _requested_ips(spec: Cursor, annotations: Mapping[str, str],
                   notes: Cursor) -> tuple[IPAddress, ...]:
    legacy = spec.at("loadBalancerIP").opt_ip()
    listed = metallb_annotation(annotations, notes, LB_IPS)
    if listed is None:
        return (legacy,) if legacy else ()
    # Name the key the user actually wrote.
    key = next(p + LB_IPS for p in ANNOTATION_PREFIXES if p + LB_IPS in annotations)
    cur = notes.at(key)
    if legacy:
        cur.fail("cannot be combined with spec.loadBalancerIP")
    ips = [ip_address(cur, part) for part in listed.split(",") if part.strip()]
    if len({ip.version for ip in ips}) != len(ips):
        cur.fail(f"expected at most one address per IP family, got {show(listed)}")
    return tuple(ips)


def _cluster_ips(spec: Cursor) -> tuple[IPAddress, ...]:
    def one(c: Cursor) -> IPAddress | None:
        # "None" marks a headless service: no cluster address at all.
        return None if c.value in ("None", "") else c.ip()

    many = [ip for ip in spec.at("clusterIPs").parse(one) if ip is not None]
    single = one(spec.at("clusterIP")) if not spec.at("clusterIP").missing else None
    if single is not None and many and many[0] != single:
        spec.at("clusterIPs").fail(f"clusterIPs[0] {many[0]} disagrees with clusterIP {single}")
    return tuple(many) if many else ((single,) if single else ())


def parse_service(doc: Any) -> Service:
    try:
        return _quick_service(doc)
    except Irregular:
        return _checked_service(doc)


def _checked_service(doc: Any) -> Service:
    obj, meta = open_object(doc, "Service", namespaced=True)
    spec = obj.at("spec")
    notes = obj.at("metadata").at("annotations")
    service_type = spec.at("type").choice(SERVICE_TYPES, "ClusterIP")
    ingress = []
    for entry in obj.at("status").at("loadBalancer").at("ingress").items():
        address = entry.at("ip").opt_ip()  # hostname-only entries carry no address
        if address is not None:
            ingress.append(address)
    families = spec.at("ipFamilies").parse(lambda c: c.choice(IP_FAMILIES))
    policy_cur = spec.at("ipFamilyPolicy")
    policy = None if policy_cur.missing else policy_cur.choice(
        ("SingleStack", "PreferDualStack", "RequireDualStack"))
    return Service(
        namespace=meta.namespace,
        name=meta.name,
        type=service_type,
        cluster_ips=_cluster_ips(spec),
        ports=tuple(spec.at("ports").parse(_parse_port)),
        external_traffic_policy=spec.at("externalTrafficPolicy").choice(
            ("Cluster", "Local"), "Cluster"),
        requested_ips=_requested_ips(spec, meta.annotations, notes),
        address_pool=metallb_annotation(meta.annotations, notes, ADDRESS_POOL),
        allow_shared_ip=metallb_annotation(meta.annotations, notes, ALLOW_SHARED_IP),
        load_balancer_class=spec.at("loadBalancerClass").opt_string() or None,
        ingress_ips=tuple(ingress),
        external_ips=tuple(spec.at("externalIPs").parse(lambda c: c.ip())),
        ip_families=tuple(families),
        ip_family_policy=policy,
        labels=meta.labels,
        annotations=meta.annotations,
    )


# -- the quick path (see fields.Irregular) -----------------------------------------

_SERVICE_TYPES = choices(SERVICE_TYPES)
_PROTOCOLS = choices(PROTOCOLS)
_IP_FAMILIES = choices(IP_FAMILIES)
_POLICIES = choices(("SingleStack", "PreferDualStack", "RequireDualStack"))
_TRAFFIC_POLICIES = choices(("Cluster", "Local"))
_NEW, _OLD = ANNOTATION_PREFIXES

# Ports as written -> the ServicePorts, shared: most Services of a cluster
# repeat a few port lists, and the objects are immutable.  Emptied when full.
_PORTS: dict[tuple[Any, ...], tuple[ServicePort, ...]] = {}


def _quick_ports(value: Any) -> tuple[ServicePort, ...]:
    items = quick_list(value)
    if not items:
        return ()
    written = []
    for port in items:
        if type(port) is not dict:
            raise Irregular
        target = port.get("targetPort")
        if type(target) is str:
            if not target:
                raise Irregular
        elif target is not None:
            target = quick_integer(target, 1, 65535)
        written.append((quick_integer(port.get("port"), 1, 65535),
                        quick_choice(port.get("protocol"), _PROTOCOLS, "TCP"),
                        quick_opt_string(port.get("name")) or "",
                        quick_opt_integer(port.get("nodePort"), 1, 65535),
                        target))
    key = tuple(written)
    return shared_value(_PORTS, key, lambda: tuple(ServicePort(*p) for p in written))


def _quick_annotation(annotations: Mapping[str, str], suffix: str) -> str | None:
    """metallb_annotation; Irregular where it would fail."""
    new, old = annotations.get(_NEW + suffix), annotations.get(_OLD + suffix)
    if new is None:
        return None if old is None else (old.strip() or None)
    new = new.strip()
    if old is not None and old.strip() != new:
        raise Irregular
    return new or None


def _quick_cluster_ip(value: Any) -> IPAddress | None:
    return None if value == "None" or value == "" else quick_ip(value)


def _quick_service(doc: Any) -> Service:
    meta = quick_meta(doc, namespaced=True)
    spec = quick_mapping(doc.get("spec"))
    service_type = quick_choice(spec.get("type"), _SERVICE_TYPES, "ClusterIP")
    ingress = []
    for entry in quick_list(quick_mapping(quick_mapping(doc.get("status"))
                                          .get("loadBalancer")).get("ingress")):
        address = quick_opt_ip(quick_mapping(entry).get("ip"))
        if address is not None:
            ingress.append(address)
    families = tuple(quick_choice(v, _IP_FAMILIES) for v in quick_list(spec.get("ipFamilies")))
    policy = spec.get("ipFamilyPolicy")
    if policy is not None:
        policy = quick_choice(policy, _POLICIES)

    texts = quick_list(spec.get("clusterIPs"))
    many = [ip for ip in map(_quick_cluster_ip, texts) if ip is not None]
    single = spec.get("clusterIP")
    # The API server writes clusterIP again as clusterIPs[0]: that text is known good.
    if single is not None and not (many and single == texts[0]):
        single = _quick_cluster_ip(single)
    else:
        single = None
    if single is not None and many and many[0] != single:
        raise Irregular
    cluster_ips = tuple(many) if many else ((single,) if single else ())

    annotations = meta.annotations
    legacy = quick_opt_ip(spec.get("loadBalancerIP"))
    if annotations:
        listed = _quick_annotation(annotations, LB_IPS)
        pool = _quick_annotation(annotations, ADDRESS_POOL)
        shared_ip = _quick_annotation(annotations, ALLOW_SHARED_IP)
    else:
        listed = pool = shared_ip = None
    if listed is None:
        requested: tuple[IPAddress, ...] = (legacy,) if legacy else ()
    else:
        if legacy:
            raise Irregular
        try:
            requested = tuple(parse_ip(part) for part in listed.split(",") if part.strip())
        except ValueError:
            raise Irregular from None
        if len({ip.version for ip in requested}) != len(requested):
            raise Irregular

    return Service(
        namespace=meta.namespace,
        name=meta.name,
        type=service_type,
        cluster_ips=cluster_ips,
        ports=_quick_ports(spec.get("ports")),
        external_traffic_policy=quick_choice(spec.get("externalTrafficPolicy"),
                                             _TRAFFIC_POLICIES, "Cluster"),
        requested_ips=requested,
        address_pool=pool,
        allow_shared_ip=shared_ip,
        load_balancer_class=quick_opt_string(spec.get("loadBalancerClass")) or None,
        ingress_ips=tuple(ingress),
        external_ips=tuple(map(quick_ip, quick_list(spec.get("externalIPs")))),
        ip_families=families,
        ip_family_policy=policy,
        labels=meta.labels,
        annotations=annotations,
    )
