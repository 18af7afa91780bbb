"""ClusterState: one consistent snapshot of every object the daemons care about.

Sources (a manifests file, the Kubernetes API) turn raw documents into
model objects with `parse_object` and hand a `ClusterState` to the agent, the
speaker and the controller, which only ever look things up in it.  The state is
immutable: a change is a new snapshot with a higher `revision`, so a consumer
can hold one while the source builds the next.

Collections are kept sorted by object identity, so two snapshots of the same
objects compare equal whatever order the documents came in; that is how a
source tells a real change from a rewrite of the same content.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from foundation.kube.model.calico import DEFAULT_NAME, BGPConfiguration, parse_bgp_configuration
from foundation.kube.model.communities import (
    BGPCommunity,
    CommunityAliases,
    parse_community_aliases,
)
from foundation.kube.model.endpoints import EndpointSlice, parse_endpoint_slice
from foundation.kube.model.errors import ModelError, ObjectRef
from foundation.kube.model.fields import Cursor, IPAddress, Irregular, show
from foundation.kube.model.meta import Namespace, parse_namespace
from foundation.kube.model.metallb import (
    BFDProfile,
    BGPAdvertisement,
    BGPPeer,
    IPAddressPool,
    L2Advertisement,
    parse_bfd_profile,
    parse_bgp_advertisement,
    parse_bgp_peer,
    parse_ip_address_pool,
    parse_l2_advertisement,
    range_networks,
    range_text,
)
from foundation.kube.model.node import Node, parse_node
from foundation.kube.model.secret import Secret, parse_secret
from foundation.kube.model.service import Service, parse_service
from foundation.sequences import identity_delta

ModelObject = (Node | Service | Namespace | EndpointSlice | IPAddressPool | L2Advertisement
               | BGPAdvertisement | BGPPeer | CommunityAliases | BGPConfiguration
               | BFDProfile | Secret)


@dataclass(frozen=True, slots=True)
class Kind:
    versions: tuple[str, ...]
    parse: Callable[[Any], ModelObject]


# (API group, kind) -> the versions understood and the parser.  Versions of one
# kind share a parser: the fields Skein reads have the same shape in each.
KINDS: Mapping[tuple[str, str], Kind] = {
    ("", "Node"): Kind(("v1",), parse_node),
    ("", "Service"): Kind(("v1",), parse_service),
    ("", "Namespace"): Kind(("v1",), parse_namespace),
    ("discovery.k8s.io", "EndpointSlice"): Kind(("v1",), parse_endpoint_slice),
    ("metallb.io", "IPAddressPool"): Kind(("v1beta1",), parse_ip_address_pool),
    ("metallb.io", "L2Advertisement"): Kind(("v1beta1",), parse_l2_advertisement),
    ("metallb.io", "BGPAdvertisement"): Kind(("v1beta1",), parse_bgp_advertisement),
    ("metallb.io", "BGPPeer"): Kind(("v1beta1", "v1beta2"), parse_bgp_peer),
    ("metallb.io", "Community"): Kind(("v1beta1",), parse_community_aliases),
    ("metallb.io", "BFDProfile"): Kind(("v1beta1",), parse_bfd_profile),
    # Only for BGPPeer.spec.passwordSecret; see foundation.kube.model.secret.
    ("", "Secret"): Kind(("v1",), parse_secret),
    ("projectcalico.org", "BGPConfiguration"): Kind(("v3",), parse_bgp_configuration),
    # The CRD Calico stores it as when calicoctl / the API server is not used.
    ("crd.projectcalico.org", "BGPConfiguration"): Kind(("v1",), parse_bgp_configuration),
}


def expand_document(doc: Any) -> list[Any]:
    """A document as the objects it holds: a `List` (kubectl get -o yaml) or an
    `XList` (an API list response, whose items lack kind and apiVersion) is
    flattened; anything else is itself, and an empty document is nothing."""
    if doc is None:
        return []
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if not (isinstance(kind, str) and kind.endswith("List") and "items" in doc):
        return [doc]
    items = doc["items"] or []
    if not isinstance(items, list):
        return [doc]  # parse_object reports it
    item_kind = kind[: -len("List")]
    out = []
    for item in items:
        if item_kind and isinstance(item, dict) and "kind" not in item:
            item = {"kind": item_kind, "apiVersion": doc.get("apiVersion"), **item}
        out.append(item)
    return out


def object_ref(doc: Any) -> ObjectRef | None:
    """Best-effort identity of a raw document, for messages about it."""
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
        return None
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    name, namespace = meta.get("name"), meta.get("namespace")
    return ObjectRef(doc["kind"], namespace if isinstance(namespace, str) else "",
                     name if isinstance(name, str) else "?")


def parse_object(doc: Any) -> ModelObject | None:
    """One Kubernetes object; None for kinds Skein does not use; ModelError if bad."""
    try:
        spec = _quick_kind(doc)
    except Irregular:
        return _checked_parse_object(doc)
    return None if spec is None else spec.parse(doc)


def _quick_kind(doc: Any) -> Kind | None:
    """The parser of a document whose kind and apiVersion are plain and known, None
    for a kind Skein does not use; Irregular for anything else (fields.Irregular)."""
    if type(doc) is dict:
        kind, api_version = doc.get("kind"), doc.get("apiVersion")
        if type(kind) is str and kind and type(api_version) is str and api_version:
            group, _, version = api_version.rpartition("/")
            spec = KINDS.get((group, kind))
            if spec is None or version in spec.versions:
                return spec
    raise Irregular


def _checked_parse_object(doc: Any) -> ModelObject | None:
    if not isinstance(doc, dict):
        raise ModelError(None, "", f"expected a Kubernetes object (a mapping), got {show(doc)}")
    top = Cursor(object_ref(doc), doc)
    kind = top.at("kind").string()
    api_version = top.at("apiVersion").string()
    group, _, version = api_version.rpartition("/")
    spec = KINDS.get((group, kind))
    if spec is None:
        return None
    if version not in spec.versions:
        top.at("apiVersion").fail(
            f"unsupported version of {kind}: expected "
            f"{' or '.join(f'{group}/{v}'.lstrip('/') for v in spec.versions)}, "
            f"got {show(api_version)}")
    return spec.parse(doc)


def ref_of(obj: ModelObject) -> ObjectRef:
    kind = "Community" if isinstance(obj, CommunityAliases) else type(obj).__name__
    return ObjectRef(kind, getattr(obj, "namespace", ""), obj.name)


@dataclass(frozen=True, eq=False)
class ServiceChanges:
    """How a source made one Services tuple from another: the Services that came
    and went, by identity (an unchanged Service is the same object in both).  It
    lets a consumer that holds `before` see a change without comparing every
    Service."""

    before: tuple[Service, ...]
    after: tuple[Service, ...]
    came: tuple[Service, ...]
    went: tuple[Service, ...]


@dataclass(frozen=True)
class ClusterState:
    nodes: tuple[Node, ...] = ()
    services: tuple[Service, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    ip_address_pools: tuple[IPAddressPool, ...] = ()
    l2_advertisements: tuple[L2Advertisement, ...] = ()
    bgp_advertisements: tuple[BGPAdvertisement, ...] = ()
    bgp_peers: tuple[BGPPeer, ...] = ()
    communities: tuple[CommunityAliases, ...] = ()
    bgp_configurations: tuple[BGPConfiguration, ...] = ()
    # Set by the source; bumped on every change it publishes.  Not part of
    # equality: two snapshots of the same objects are the same state.
    revision: int = field(default=0, compare=False)
    # After `revision`, so that positional construction stays as it was.
    bfd_profiles: tuple[BFDProfile, ...] = ()
    secrets: tuple[Secret, ...] = ()
    # What the source knows of how `services` differs from its last state's; see
    # `services_since`.
    service_changes: ServiceChanges | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_objects(cls, objects: Iterable[ModelObject], revision: int = 0) -> ClusterState:
        """Bucket objects by kind; a later object with the same identity replaces an earlier."""
        unique = {ref_of(o): o for o in objects}
        buckets: dict[type, list[Any]] = {}
        for ref in sorted(unique):
            obj = unique[ref]
            buckets.setdefault(type(obj), []).append(obj)

        def of(t: type) -> tuple[Any, ...]:
            return tuple(buckets.get(t, ()))

        return cls(of(Node), of(Service), of(Namespace), of(EndpointSlice), of(IPAddressPool),
                   of(L2Advertisement), of(BGPAdvertisement), of(BGPPeer), of(CommunityAliases),
                   of(BGPConfiguration), revision, of(BFDProfile), of(Secret))

    def services_since(self, before: ClusterState) -> tuple[Sequence[Service],
                                                            Sequence[Service]]:
        """(came, went): this state's Services that are not in `before` and the other
        way round, by identity; from the source's record when it made these Services
        from `before`'s, else by comparing the two tuples."""
        if self.services is before.services:
            return (), ()
        changes = self.service_changes
        if (changes is not None and changes.before is before.services
                and changes.after is self.services):
            return changes.came, changes.went
        return identity_delta(before.services, self.services)

    # -- indexes (built on first use; the snapshot never changes) ---------------

    @cached_property
    def _nodes(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def _services(self) -> dict[tuple[str, str], Service]:
        return {(s.namespace, s.name): s for s in self.services}

    @cached_property
    def _pools(self) -> dict[str, IPAddressPool]:
        # MetalLB refers to pools by name alone (they all live in its namespace).
        return {p.name: p for p in self.ip_address_pools}

    @cached_property
    def _pool_spans(self) -> dict[int, tuple[list[int], list[IPAddressPool | None]]]:
        """Per IP version, the address space cut where any pool range starts or ends:
        the spans' first addresses, sorted, and each span's pool (the first in
        `ip_address_pools` holding it; None between pools), for a bisect."""
        spans: dict[int, tuple[list[int], list[IPAddressPool | None]]] = {}
        for version in (4, 6):
            ranges = [(int(r.first), int(r.last), p) for p in self.ip_address_pools
                      for r in p.addresses if r.first.version == version]
            starts = sorted({b for low, high, _ in ranges for b in (low, high + 1)})
            owners = [next((p for low, high, p in ranges if low <= start <= high), None)
                      for start in starts]
            spans[version] = (starts, owners)
        return spans

    @cached_property
    def _slices(self) -> dict[tuple[str, str], list[EndpointSlice]]:
        index: dict[tuple[str, str], list[EndpointSlice]] = {}
        for s in self.endpoint_slices:
            if s.service_name:
                index.setdefault((s.namespace, s.service_name), []).append(s)
        return index

    @cached_property
    def _alias_definitions(self) -> dict[str, list[CommunityAliases]]:
        found: dict[str, list[CommunityAliases]] = {}
        for c in self.communities:
            for name in c.aliases:
                found.setdefault(name, []).append(c)
        return found

    @cached_property
    def _aliases(self) -> dict[str, BGPCommunity]:
        # A name two Community objects define is no alias at all: MetalLB refuses
        # the whole configuration, and either value could be the wrong one.
        return {name: where[0].aliases[name] for name, where in self._alias_definitions.items()
                if len(where) == 1}

    # -- lookups ------------------------------------------------------------------

    def node(self, name: str) -> Node | None:
        return self._nodes.get(name)

    def service(self, namespace: str, name: str) -> Service | None:
        return self._services.get((namespace, name))

    def load_balancer_services(self) -> tuple[Service, ...]:
        return tuple(s for s in self.services if s.is_load_balancer)

    def pool(self, name: str) -> IPAddressPool | None:
        return self._pools.get(name)

    def pool_of(self, address: IPAddress) -> IPAddressPool | None:
        """The pool whose ranges hold `address` (the first by name if several do)."""
        starts, owners = self._pool_spans[address.version]
        i = bisect_right(starts, int(address)) - 1
        return owners[i] if i >= 0 else None

    def namespace_labels(self, name: str) -> Mapping[str, str]:
        return next((n.labels for n in self.namespaces if n.name == name), {})

    def endpoint_slices_for(self, service: Service) -> tuple[EndpointSlice, ...]:
        return tuple(self._slices.get((service.namespace, service.name), ()))

    def ready_nodes(self, service: Service) -> frozenset[str]:
        """Nodes with at least one ready endpoint of `service`."""
        nodes: set[str] = set()
        for s in self.endpoint_slices_for(service):
            nodes |= s.ready_nodes()
        return frozenset(nodes)

    def l2_advertisements_for(self, pool: IPAddressPool, node: Node,
                              service: Service | None = None) -> tuple[L2Advertisement, ...]:
        """The L2Advertisements covering `pool` on `node`, and `service` when given
        (serviceSelectors); without `service`, whatever their serviceSelectors."""
        return tuple(a for a in self.l2_advertisements
                     if a.selects_pool(pool) and a.selects_node(node.labels)
                     and (service is None or a.selects_service(service.labels)))

    def bgp_advertisements_for(self, pool: IPAddressPool, node: Node,
                               service: Service | None = None) -> tuple[BGPAdvertisement, ...]:
        """As l2_advertisements_for, for BGPAdvertisements."""
        return tuple(a for a in self.bgp_advertisements
                     if a.selects_pool(pool) and a.selects_node(node.labels)
                     and (service is None or a.selects_service(service.labels)))

    def bfd_profile(self, name: str) -> BFDProfile | None:
        """MetalLB refers to BFD profiles by name alone (all in its namespace)."""
        return next((p for p in self.bfd_profiles if p.name == name), None)

    def secret(self, namespace: str, name: str) -> Secret | None:
        return next((s for s in self.secrets
                     if s.namespace == namespace and s.name == name), None)

    def bgp_peers_for(self, node: Node) -> tuple[BGPPeer, ...]:
        return tuple(p for p in self.bgp_peers if p.selects_node(node.labels))

    def communities_for(self, adv: BGPAdvertisement) -> tuple[BGPCommunity, ...]:
        """The advertisement's communities with aliases resolved via Community objects.

        An alias that no Community, or more than one, defines is a ModelError
        naming the field; the caller decides whether that drops the advertisement
        or just the alias.
        """
        out: list[BGPCommunity] = []
        for i, entry in enumerate(adv.communities):
            if isinstance(entry, str):
                value = self._aliases.get(entry)
                if value is None:
                    raise ModelError(ref_of(adv), f"spec.communities[{i}]",
                                     self._unresolved(entry))
                entry = value
            out.append(entry)
        return tuple(out)

    def _unresolved(self, name: str) -> str:
        where = self._alias_definitions.get(name, [])
        if len(where) > 1:
            return (f"{show(name)} is defined by more than one Community "
                    f"({', '.join(f'{c.namespace}/{c.name}' for c in where)})")
        hint = " (nor is it a community value, A:B or large:A:B:C)" if ":" in name else ""
        return f"no Community object defines {show(name)}{hint}"

    def problems(self) -> list[ModelError]:
        """Errors only visible across objects, each naming the object and field at fault.

        They do not drop anything (which object of a clashing pair is wrong is
        the user's call); sources log them so a typo in a pool name does not
        silently announce nothing.
        """
        found: list[ModelError] = []
        # MetalLB refuses pools that share addresses: the owner would be ambiguous.
        spans = sorted(((r.version, int(r.first), int(r.last), p.name, i)
                        for p in self.ip_address_pools for i, r in enumerate(p.addresses)))
        for a, b in zip(spans, spans[1:], strict=False):
            if a[0] == b[0] and b[1] <= a[2] and a[3] != b[3]:
                pool = self._pools[b[3]]
                found.append(ModelError(ref_of(pool), f"spec.addresses[{b[4]}]",
                                        f"overlaps IPAddressPool {a[3]}"))
        advertisements: list[L2Advertisement | BGPAdvertisement] = [
            *self.l2_advertisements, *self.bgp_advertisements]
        for adv in advertisements:
            for i, name in enumerate(adv.selection.ip_address_pools):
                if name not in self._pools:
                    found.append(ModelError(ref_of(adv), f"spec.ipAddressPools[{i}]",
                                            f"no IPAddressPool is named {show(name)}"))
        for name, where in self._alias_definitions.items():
            for c in where[1:]:
                found.append(ModelError(ref_of(c), "spec.communities",
                                        f"alias {show(name)} is defined by Community "
                                        f"{where[0].namespace}/{where[0].name} too"))
        peer_names = {p.name for p in self.bgp_peers}
        for adv in self.bgp_advertisements:
            for i, name in enumerate(adv.peers):
                if name not in peer_names:
                    found.append(ModelError(ref_of(adv), f"spec.peers[{i}]",
                                            f"no BGPPeer is named {show(name)}"))
            try:
                self.communities_for(adv)
            except ModelError as exc:
                found.append(exc)
            found.extend(self._aggregation_problems(adv))
        return found

    def _aggregation_problems(self, adv: BGPAdvertisement) -> list[ModelError]:
        # MetalLB's rule: aggregating to a prefix shorter than the widest CIDR of
        # an address entry would announce addresses the pool does not own.
        out = []
        for pool in self.ip_address_pools:
            if not adv.selects_pool(pool):
                continue
            for entry in pool.addresses:
                widest = min(n.prefixlen for n in range_networks(entry))
                field_name, length = (("aggregationLength", adv.aggregation_length)
                                      if entry.version == 4 else
                                      ("aggregationLengthV6", adv.aggregation_length_v6))
                if length < widest:
                    out.append(ModelError(
                        ref_of(adv), f"spec.{field_name}",
                        f"{length} is shorter than prefix /{widest} of {range_text(entry)} in "
                        f"IPAddressPool {pool.name}"))
        return out

    def calico_bgp_configuration(self) -> BGPConfiguration | None:
        """Calico's cluster-wide BGPConfiguration (the one named "default")."""
        return next((c for c in self.bgp_configurations if c.name == DEFAULT_NAME), None)
