"""MetalLB's status surfaces, pure parts: which ServiceL2Status / ServiceBGPStatus
objects a node should hold (speaker.kube_status), the writes that get there from
what the API holds, the nodeAssigned messages, and MetalLB's metrics
(speaker.metrics.MetalLBMetrics).  The kube lab tier (tests/kube_lab/
test_status_objects.py) runs the writer against a real API server."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY

from speaker.api.peer_status import BGP, ESTABLISHED, MEMBER, PeerStatus
from speaker.kube_status import (
    KIND_OF,
    KINDS,
    LABEL_NODE,
    LABEL_SERVICE_NAME,
    LABEL_SERVICE_NAMESPACE,
    Create,
    Delete,
    Note,
    SetStatus,
    StatusWriter,
    assigned_messages,
    desired_statuses,
    event_body,
    plan_writes,
    problem_notes,
    status_patch,
)
from speaker.metrics import MetalLBMetrics, announced_samples, peer_samples
from speaker.plan import BGP as BGP_MODE
from speaker.plan import L2, Announcement
from tests.calls import record_calls

A = ipaddress.ip_address


def l2(address: str, *services: str, interfaces: tuple[str, ...] = ()) -> Announcement:
    return Announcement(A(address), L2, interfaces, services)


def bgp(address: str, *services: str, peers: tuple[str, ...]) -> Announcement:
    return Announcement(A(address), BGP_MODE, (), services,
                        ipaddress.ip_network(f"{address}/32"), peers=peers)


def obj(name: str, node: str, namespace: str, service: str,
        status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {
        LABEL_NODE: node, LABEL_SERVICE_NAMESPACE: namespace, LABEL_SERVICE_NAME: service}},
        "status": status or {}}


def test_one_status_per_service_and_mode_with_interfaces_and_peers() -> None:
    desired = [
        l2("192.0.2.10", "default/web"),
        l2("2001:db8::10", "default/web"),  # dual stack: still one object
        l2("192.0.2.11", "shop/cart", interfaces=("eth1",)),
        l2("192.0.2.12", "shop/cart", interfaces=("eth0",)),
        bgp("198.51.100.1", "default/web", peers=("tor-b",)),
        bgp("198.51.100.2", "default/web", peers=("tor-a",)),
        Announcement(A("10.0.0.9")),  # added by hand: no Service, no object
        bgp("10.244.1.0", peers=("tor-a",)),  # a pod CIDR route: no Service
    ]
    assert desired_statuses("node1", desired) == {
        (L2, "default", "web"): {"node": "node1", "serviceName": "web",
                                 "serviceNamespace": "default"},
        (L2, "shop", "cart"): {"node": "node1", "serviceName": "cart",
                               "serviceNamespace": "shop",
                               "interfaces": [{"name": "eth0"}, {"name": "eth1"}]},
        (BGP_MODE, "default", "web"): {"node": "node1", "serviceName": "web",
                                       "serviceNamespace": "default",
                                       "peers": ["tor-a", "tor-b"]},
    }


def test_an_address_on_every_interface_lists_none() -> None:
    """MetalLB lists interfaces only when the advertisement restricts them."""
    statuses = desired_statuses("n", [l2("192.0.2.1", "a/s", interfaces=("eth1",)),
                                      l2("192.0.2.2", "a/s")])
    assert "interfaces" not in statuses[(L2, "a", "s")]


def test_writes_create_update_dedupe_and_delete_only_this_nodes_objects() -> None:
    want = desired_statuses("n1", [l2("192.0.2.1", "d/new"), l2("192.0.2.2", "d/changed"),
                                   l2("192.0.2.3", "d/same"), l2("192.0.2.4", "d/twice")])
    same = want[(L2, "d", "same")]
    existing = {"servicel2statuses": [
        obj("l2-a", "n1", "d", "changed", {"node": "n1", "serviceName": "changed",
                                                 "serviceNamespace": "d",
                                                 "interfaces": [{"name": "eth9"}]}),
        obj("l2-b", "n1", "d", "same", same),
        obj("l2-c", "n1", "d", "twice", want[(L2, "d", "twice")]),
        obj("l2-d", "n1", "d", "twice", want[(L2, "d", "twice")]),
        obj("l2-e", "n1", "d", "gone"),
        obj("l2-f", "n2", "d", "other"),  # another node's, for a Service not ours
        {"metadata": {"name": "l2-x", "labels": {LABEL_NODE: "n1"}}},  # not ours: no labels
    ], "servicebgpstatuses": [obj("bgp-a", "n1", "d", "old")]}
    l2_kind, bgp_kind = KIND_OF[L2], KIND_OF[BGP_MODE]
    assert plan_writes("n1", want, existing, frozenset({"n1", "n2"})) == [
        SetStatus(l2_kind, "l2-a", (L2, "d", "changed"), want[(L2, "d", "changed")]),
        Create(l2_kind, (L2, "d", "new"), want[(L2, "d", "new")]),
        Delete(l2_kind, "l2-d", (L2, "d", "twice"), "a duplicate"),
        Delete(l2_kind, "l2-e", (L2, "d", "gone"), "not announced from here any more"),
        Delete(bgp_kind, "bgp-a", (BGP_MODE, "d", "old"), "not announced from here any more"),
    ]
    # Nothing to do once the API holds what is wanted.
    settled = {"servicel2statuses": [obj(f"l2-{i}", "n1", k[1], k[2], s)
                                     for i, (k, s) in enumerate(want.items())]}
    assert plan_writes("n1", want, settled, frozenset({"n1"})) == []


def test_the_new_l2_owner_deletes_a_dead_nodes_status_and_only_that() -> None:
    want = desired_statuses("n2", [l2("192.0.2.1", "d/web")])
    existing = {"servicel2statuses": [
        obj("l2-old", "n1", "d", "web", {"node": "n1"}),
        obj("l2-live", "n3", "d", "web", {"node": "n3"}),  # alive: its other address
        obj("l2-else", "n1", "d", "db", {"node": "n1"}),  # not ours to judge
    ], "servicebgpstatuses": [obj("bgp-1", "n1", "d", "web")]}  # BGP: every node
    writes = plan_writes("n2", want, existing, frozenset({"n2", "n3"}))
    assert [w for w in writes if isinstance(w, Delete)] == [
        Delete(KIND_OF[L2], "l2-old", (L2, "d", "web"), "n1 is dead")]


def test_nothing_announced_removes_everything_of_this_node() -> None:
    existing = {"servicel2statuses": [obj("l2-a", "n1", "d", "web")],
                "servicebgpstatuses": [obj("bgp-a", "n1", "d", "web"),
                                       obj("bgp-b", "n2", "d", "web")]}
    assert [w.name for w in plan_writes("n1", {}, existing, frozenset({"n1"}))
            if isinstance(w, Delete)] == ["l2-a", "bgp-a"]


def test_status_patch_removes_fields_no_longer_wanted() -> None:
    assert status_patch({"node": "n", "serviceName": "s", "serviceNamespace": "d"}) == {
        "status": {"interfaces": None, "peers": None, "node": "n", "serviceName": "s",
                   "serviceNamespace": "d"}}


def test_node_assigned_only_when_a_node_starts_announcing() -> None:
    before = [(L2, "d", "web")]
    after = [(L2, "d", "web"), (BGP_MODE, "d", "web"), (L2, "d", "db")]
    assert assigned_messages("node2", before, after) == [
        ("d", "web", 'announcing from node "node2" with protocol "bgp"'),
        ("d", "db", 'announcing from node "node2" with protocol "layer2"'),
    ]
    assert assigned_messages("node2", after, before) == []


def sample(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_metallb_metrics_per_peer_and_per_announced_address() -> None:
    up = PeerStatus(BGP, "192.168.56.5", ESTABLISHED, prefixes_advertised=3, peer_port=179)
    down = PeerStatus(BGP, "2001:db8::5", "Active", prefixes_advertised=2, peer_port=1179)
    member = PeerStatus(MEMBER, "node2", "alive")
    samples = peer_samples([up, down, member], {"192.168.56.5": 4})
    assert [s.label for s in samples] == ["192.168.56.5:179", "2001:db8::5:1179"]
    metrics = MetalLBMetrics()
    announced = announced_samples("node1", [l2("192.0.2.1", "d/web"),
                                            bgp("198.51.100.1", "d/web", peers=("tor",))])
    assert announced == {("layer2", "d/web", "node1", "192.0.2.1"),
                         ("bgp", "d/web", "node1", "198.51.100.1")}
    metrics.record(samples, announced)
    peer = {"peer": "192.168.56.5:179"}
    assert sample("metallb_bgp_session_up", peer) == 1
    assert sample("metallb_bgp_announced_prefixes_total", peer) == 3
    assert sample("metallb_bgp_updates_total", peer) == 4
    other = {"peer": "2001:db8::5:1179"}
    assert sample("metallb_bgp_session_up", other) == 0
    # Down: nothing advertised, everything pending, as MetalLB reports it.
    assert sample("metallb_bgp_announced_prefixes_total", other) == 0
    assert sample("metallb_bgp_pending_prefixes_total", other) == 2
    assert sample("metallb_bgp_updates_total", other) is None  # not counted: no series
    assert sample("metallb_speaker_announced", {"protocol": "layer2", "service": "d/web",
                                                "node": "node1", "ip": "192.0.2.1"}) == 1
    # More UPDATEs, then the session re-created (its count restarts): the counter goes on.
    metrics.record(peer_samples([up], {"192.168.56.5": 6}), set())
    assert sample("metallb_bgp_updates_total", peer) == 6
    metrics.record(peer_samples([up], {"192.168.56.5": 1}), set())
    assert sample("metallb_bgp_updates_total", peer) == 7
    # A peer removed and an address withdrawn lose their series.
    assert sample("metallb_bgp_session_up", other) is None
    assert sample("metallb_speaker_announced", {"protocol": "layer2", "service": "d/web",
                                                "node": "node1", "ip": "192.0.2.1"}) is None
    metrics.record([], set())
    assert sample("metallb_bgp_session_up", peer) is None


def test_the_announced_series_follow_a_change_by_the_entries_it_moved() -> None:
    """A change sets and removes the series of the entries that came and went; one
    address announced by two entries (per-peer BGP attributes) keeps its series
    until the last of them goes."""
    node = "node9"

    def shown() -> set[tuple[str, ...]]:
        return {tuple(s.labels[k] for k in ("protocol", "service", "node", "ip"))
                for m in REGISTRY.collect() if m.name == "metallb_speaker_announced"
                for s in m.samples if s.labels.get("node") == node}

    metrics = MetalLBMetrics()
    web = l2("192.0.2.1", "d/web")
    db_tor = bgp("198.51.100.1", "d/db", peers=("tor",))
    db_spine = bgp("198.51.100.1", "d/db", peers=("spine",))
    metrics.record([], announced_samples(node, [web, db_tor]))
    metrics.changed(node, [db_spine], [])
    metrics.changed(node, [], [db_tor])
    assert shown() == announced_samples(node, [web, db_spine])
    api = l2("192.0.2.2", "d/api")
    metrics.changed(node, [api], [web, db_spine])
    assert shown() == announced_samples(node, [api]) == {("layer2", "d/api", node, "192.0.2.2")}
    metrics.record([], set())
    assert shown() == set()


def test_plan_problems_become_warning_events_on_their_objects() -> None:
    problems = [
        "BGP: BGPPeer metallb-system/router: spec.bfdProfile: no BFDProfile is named "
        "'fast'; no session until it exists",
        "Service default/web: 10.0.0.9 is in no IPAddressPool: not announced",
        "BGPAdvertisements give 10.0.0.1/32 different localPref towards BGPPeer x; sending "
        "the highest, 200",  # about two objects: the log line is enough
    ]
    assert problem_notes("node2", problems) == [
        Note("metallb.io/v1beta2", "BGPPeer", "metallb-system", "router", "ConfigRefused",
             "spec.bfdProfile: no BFDProfile is named 'fast'; no session until it exists "
             "(node node2)"),
        Note("v1", "Service", "default", "web", "NotAnnounced",
             "10.0.0.9 is in no IPAddressPool: not announced (node node2)"),
    ]
    body = event_body(problem_notes("node2", problems[:1])[0], "node2", "2026-12-07T00:00:00Z")
    assert body["involvedObject"] == {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
                                      "namespace": "metallb-system", "name": "router"}
    assert body["metadata"]["namespace"] == "metallb-system" and body["type"] == "Warning"


class _Client:
    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []

    def request(self, method: str, path: str, body: Any = None, **_kw: Any) -> Any:
        assert method == "POST" and path.endswith("/events")
        self.posted.append(body)
        return {}


def test_each_problem_is_reported_once_and_again_after_it_went_away() -> None:
    client = _Client()
    writer = StatusWriter(client, "node1", "skein-system")  # type: ignore[arg-type]
    peer = "BGPPeer metallb-system/router: spec.vrf: not served"
    writer.observe_problems([peer])
    writer.observe_problems([peer])
    writer.observe_problems([])
    writer.observe_problems([peer])
    writer._record(writer._wanted.events)
    assert [b["involvedObject"]["name"] for b in client.posted] == ["router", "router"]


def test_the_same_plan_observed_again_is_not_looked_at_again(monkeypatch: Any) -> None:
    """The event bus hands the writer the plan every second; only a new plan is
    turned into statuses and Events, and a daemon's change into those of the
    Services it touches.  New live nodes make the layer 2 Services' objects
    worth a sync (a dead owner's), with the same statuses."""
    import speaker.kube_status as kube_status

    calls = record_calls(monkeypatch, kube_status, "desired_statuses")
    writer = StatusWriter(_Client(), "node1", "skein-system")  # type: ignore[arg-type]
    web = l2("10.0.0.1", "d/web", interfaces=("eth0",))
    plan = (web, bgp("10.0.0.9", "d/api", peers=("router",)))
    writer.observe(plan, frozenset({"node1"}))
    writer.observe(plan, frozenset({"node1"}))
    assert [len(desired) for _node, desired in calls] == [2]
    writer._suspects = set()
    writer.observe(plan, frozenset({"node1", "node2"}))  # another node came
    assert len(calls) == 1 and writer._wanted.live == frozenset({"node1", "node2"})
    assert writer._suspects == {("l2", "d", "web")}
    # A change: only the entries of the Services it touches.
    db = l2("10.0.0.2", "d/db")
    bigger = (*plan, db)
    writer.observe(bigger, frozenset({"node1", "node2"}), (plan, bigger, (db,), ()))
    assert [len(desired) for _node, desired in calls] == [2, 1]
    assert set(writer._wanted.statuses) == {("l2", "d", "web"), ("l2", "d", "db"),
                                            ("bgp", "d", "api")}
    assert [n.name for n in writer._wanted.events] == ["api", "web", "db"]
    assert writer._suspects == {("l2", "d", "web"), ("l2", "d", "db")}
    # A change that does not lead from the plan seen last: all of it.
    writer.observe(plan, frozenset({"node1", "node2"}), (bigger, bigger, (), ()))
    assert [len(desired) for _node, desired in calls] == [2, 1, 2]
    assert set(writer._wanted.statuses) == {("l2", "d", "web"), ("bgp", "d", "api")}
    # Without layer 2 here, who lives does not matter: a heartbeat lapse is no work.
    bgp_only = (bgp("10.0.0.3", "d/api", peers=("router",)),)
    writer.observe(bgp_only, frozenset({"node1", "node2"}))
    writer._dirty = False
    writer.observe(bgp_only, frozenset({"node1"}))
    writer.observe(bgp_only, frozenset({"node1", "node2"}))
    assert len(calls) == 4 and not writer._dirty
    assert set(writer._wanted.statuses) == {("bgp", "d", "api")}


class _Store:
    """The API's side of the status objects: list (with the node label selector),
    create with a generated name, status patch, delete; every list counted."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self.lists: list[str] = []
        self.serial = 0
        self.missing: set[str] = set()  # kinds not served: 404

    def list_all(self, path: str, label_selector: str | None = None,
                 each: Any = None, **_kw: Any) -> tuple[list[Any], str]:
        plural = path.rsplit("/", 1)[1]
        if plural in self.missing:
            raise ApiException(status=404, reason="Not Found")
        self.lists.append(plural)
        items = list(self.objects.get(plural, {}).values())
        if label_selector is not None:
            key, _, value = label_selector.partition("=")
            items = [o for o in items if o["metadata"]["labels"].get(key) == value]
        return [dict(o) if each is None else each(o) for o in items], "1"

    def request(self, method: str, path: str, body: Any = None, **_kw: Any) -> Any:
        parts = path.split("/")
        if method == "POST" and path.endswith("/events"):
            return {}
        if method == "POST":
            self.serial += 1
            name = f"{body['metadata']['generateName']}{self.serial}"
            created = {**body, "metadata": {**body["metadata"], "name": name,
                                            "managedFields": [{"manager": "skein"}]}}
            self.objects.setdefault(parts[-1], {})[name] = created
            return dict(created)
        if method == "PATCH":
            plural, name = parts[-3], parts[-2]
            self.objects[plural][name] = {**self.objects[plural][name],
                                          "status": {k: v for k, v in body["status"].items()
                                                     if v is not None}}
            return {}
        assert method == "DELETE"
        self.objects[parts[-2]].pop(parts[-1])
        return {}

    def statuses(self, node: str) -> dict[tuple[str, str], dict[str, Any]]:
        return {(plural, o["metadata"]["labels"][LABEL_SERVICE_NAME]): o["status"]
                for plural, objs in self.objects.items() for o in objs.values()
                if o["metadata"]["labels"][LABEL_NODE] == node}


def listed(store: _Store) -> StatusWriter:
    """A writer whose watches listed both kinds (as its ListWatch threads would)."""
    writer = StatusWriter(store, "node1", "skein-system")  # type: ignore[arg-type]
    for kind in KINDS:
        assert writer._list(kind) is not None
    return writer


def sync(writer: StatusWriter, plan: tuple[Announcement, ...], live: frozenset[str]) -> bool:
    writer.observe(plan, live)
    writer._dirty = False
    return writer._sync(dict(writer._wanted.statuses), live, False)


def test_a_change_is_written_without_listing_every_status_object_again() -> None:
    """The objects are listed once (BGP: this node's alone); a change is planned
    against what that list, the watch and the writer's own writes say exists."""
    store = _Store()
    store.objects["servicebgpstatuses"] = {"bgp-n2": obj("bgp-n2", "node2", "d", "db")}
    writer = listed(store)
    assert sorted(store.lists) == sorted(k.plural for k in KINDS)
    assert writer._existing["servicebgpstatuses"].objects == {}  # another node's BGP: not followed
    live = frozenset({"node1"})
    assert sync(writer, (l2("10.0.0.1", "d/web"), bgp("10.0.0.2", "d/db", peers=("router",))),
                live)
    assert sync(writer, (l2("10.0.0.1", "d/web"), bgp("10.0.0.3", "d/api", peers=("router",))),
                live)
    assert sync(writer, (bgp("10.0.0.3", "d/api", peers=("router", "other")),), live)
    assert len(store.lists) == len(KINDS)  # no list for the three changes
    assert store.statuses("node1") == {
        ("servicebgpstatuses", "api"): {"node": "node1", "serviceName": "api",
                                        "serviceNamespace": "d", "peers": ["other", "router"]}}
    # What it keeps of each object is what it plans by: name, labels, status.
    kept = [o for known in writer._existing.values() for o in known.objects.values()]
    assert kept and all(set(o["metadata"]) == {"name", "labels"} for o in kept)


def test_only_an_event_that_shows_drift_makes_the_writer_sync() -> None:
    """The echo of its own writes is no work (at N Services each would have been a
    plan of all N); an object of ours deleted or changed by someone else is written
    back, and a dead node's ServiceL2Status for a Service this node owns deleted."""
    store = _Store()
    writer = listed(store)
    l2_kind, bgp_kind = KIND_OF[L2], KIND_OF[BGP_MODE]
    live = frozenset({"node1"})
    plan = (l2("10.0.0.1", "d/web"), bgp("10.0.0.2", "d/db", peers=("router",)))
    assert sync(writer, plan, live)
    for kind in KINDS:  # the echoes of the two creates: without status, then with it
        for o in store.objects[kind.plural].values():
            writer._on_event(kind, "ADDED", {**o, "status": {}})
            writer._on_event(kind, "MODIFIED", o)
    assert not writer._dirty
    assert all(o["status"] for known in writer._existing.values() for o in known.objects.values())
    # Deleted by someone else: back with its status.
    name = next(iter(store.objects["servicebgpstatuses"]))
    gone = store.objects["servicebgpstatuses"].pop(name)
    writer._on_event(bgp_kind, "DELETED", gone)
    assert writer._dirty
    assert sync(writer, plan, live)
    (back,) = store.objects["servicebgpstatuses"].values()
    assert back["status"]["peers"] == ["router"] and back["metadata"]["name"] != name
    writer._on_event(bgp_kind, "DELETED", {**back, "metadata": {  # its own delete's echo
        **back["metadata"], "labels": {**back["metadata"]["labels"],
                                       LABEL_SERVICE_NAME: "not-announced"}}})
    assert not writer._dirty
    # Its status changed by someone else: set back.
    edited = {**back, "status": {**back["status"], "peers": []}}
    writer._on_event(bgp_kind, "MODIFIED", edited)
    assert writer._dirty
    store.objects["servicebgpstatuses"][back["metadata"]["name"]] = edited
    assert sync(writer, plan, live)
    assert store.statuses("node1")[("servicebgpstatuses", "db")]["peers"] == ["router"]
    # Another node's ServiceL2Status for web: nothing while that node lives, deleted
    # once it is dead.
    other = obj("l2-x", "node2", "d", "web", {"node": "node2"})
    store.objects["servicel2statuses"]["l2-x"] = other
    both = frozenset({"node1", "node2"})
    writer.observe(plan, both)
    writer._dirty = False
    writer._on_event(l2_kind, "ADDED", other)
    assert not writer._dirty
    assert sync(writer, plan, live)
    assert "l2-x" not in store.objects["servicel2statuses"]
    assert len(store.lists) == len(KINDS)


def test_kinds_the_api_does_not_serve_are_said_once_and_the_rest_written(
        caplog: Any) -> None:
    store = _Store()
    store.missing = {"servicel2statuses"}
    writer = StatusWriter(store, "node1", "skein-system")  # type: ignore[arg-type]
    assert writer._list(KIND_OF[L2]) is None
    assert writer._list(KIND_OF[BGP_MODE]) is not None
    plan = (l2("10.0.0.1", "d/web"), bgp("10.0.0.2", "d/db", peers=("router",)))
    assert sync(writer, plan, frozenset({"node1"}))
    assert sync(writer, plan, frozenset({"node1"}))
    assert set(store.statuses("node1")) == {("servicebgpstatuses", "db")}
    assert [r.message for r in caplog.records if "install the CRDs" in r.message] == [
        "status objects: the API does not serve ServiceL2Status/ServiceBGPStatus "
        "(metallb.io/v1beta1): install the CRDs of install/manifests/10-crds.yaml; retrying"]
    # Served now: its list puts it in the plan.
    store.missing = set()
    assert writer._list(KIND_OF[L2]) is not None and writer._dirty
    assert sync(writer, plan, frozenset({"node1"}))
    assert set(store.statuses("node1")) == {("servicebgpstatuses", "db"),
                                            ("servicel2statuses", "web")}


def drain(writer: StatusWriter) -> None:
    """One turn of the writer's thread: what is suspect, synced."""
    with writer._lock:
        suspects, writer._suspects = writer._suspects, set()
        wanted = writer._wanted.statuses
        statuses = dict(wanted) if suspects is None else {
            k: wanted[k] for k in suspects if k in wanted}
        writer._dirty = False
    assert writer._sync(statuses, writer._wanted.live, False, suspects)


entry = st.one_of(
    st.none(),
    st.tuples(st.just("l2"), st.sampled_from([(), ("eth0",), ("eth1",)])),
    st.tuples(st.just("bgp"), st.sampled_from([("router",), ("router", "other"), ()])))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.fixed_dictionaries({f"s{i}": entry for i in range(4)}),
                          st.booleans()), min_size=1, max_size=10))
def test_syncing_the_services_a_change_touches_gives_what_a_whole_sync_gives(
        steps: list[tuple[dict[str, Any], bool]]) -> None:
    """Plans follow one another (each entry kept as the same object while it does
    not change, as the daemon keeps them); sometimes one of the node's objects is
    deleted behind its back.  After each, the API holds exactly the statuses of
    the whole plan."""
    from foundation.sequences import identity_delta

    store = _Store()
    writer = listed(store)
    live = frozenset({"node1"})
    plan: tuple[Announcement, ...] = ()
    entries: dict[str, Announcement] = {}
    for i, (spec, vandal) in enumerate(steps):
        for n, (name, what) in enumerate(sorted(spec.items())):
            if what is None:
                entries.pop(name, None)
                continue
            address = f"10.0.{n}.1"
            made = (l2(address, f"d/{name}", interfaces=what[1]) if what[0] == "l2"
                    else bgp(address, f"d/{name}", peers=what[1]))
            if entries.get(name) != made:
                entries[name] = made
        before, plan = plan, tuple(entries[k] for k in sorted(entries))
        came, went = identity_delta(before, plan)
        writer.observe(plan, live, (before, plan, came, went))
        if vandal and store.objects.get("servicebgpstatuses"):
            name = sorted(store.objects["servicebgpstatuses"])[i % len(
                store.objects["servicebgpstatuses"])]
            writer._on_event(KIND_OF[BGP_MODE], "DELETED",
                             store.objects["servicebgpstatuses"].pop(name))
        drain(writer)
        want = {(KIND_OF[k[0]].plural, k[2]): s
                for k, s in desired_statuses("node1", plan).items()}
        assert store.statuses("node1") == want
        assert all(len([o for o in objs.values() if o["metadata"]["labels"][LABEL_NODE]
                        == "node1"]) == len({k for k in want if k[0] == plural})
                   for plural, objs in store.objects.items())
