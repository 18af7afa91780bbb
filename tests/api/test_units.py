"""The API's pure parts without root: manual merge, event diffs, the bus, flags, CLI helpers."""

from __future__ import annotations

import asyncio
import ipaddress
from types import SimpleNamespace
from typing import Any

import click
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.kube.sources.file import ManifestParser, parse_manifests
from lab.speakers import (
    address_pool,
    bgp_advertisement,
    bgp_peer,
    endpoint_slice,
    l2_advertisement,
    lb_service,
)
from speaker.api.events import Event, EventBus, Observation, Subscription, diff
from speaker.api.manual import ManualAddresses
from speaker.api.peer_status import PeerStatus
from speaker.api.service import api_options, check_arguments
from speaker.cli.common import duration, table
from speaker.daemon import Planner, log_plan_change
from speaker.plan import Announcement

A, B = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")


class Kind:
    def __init__(self, kind: str) -> None:
        self.kind = kind


def test_manual_addresses_join_the_plan_once_per_mechanism() -> None:
    wakes: list[int] = []
    manual = ManualAddresses(lambda: wakes.append(1))
    planned = (Announcement(A, "l2", services=("default/web",)),)
    assert manual.merge(planned, [Kind("l2"), Kind("bgp")], ["tor"]) == planned
    manual.add(A)
    manual.add(B)
    assert len(wakes) == 2
    merged = manual.merge(planned, [Kind("l2"), Kind("bgp")], ["tor"])
    assert [(a.address, a.kind) for a in merged if a.kind == "l2"] == [(A, "l2"), (B, "l2")]
    assert planned[0] in merged  # the Service's own entry is kept, not doubled
    bgp = [a for a in merged if a.kind == "bgp"]
    assert [(a.address, str(a.prefix), a.peers) for a in bgp] == [
        (A, "192.0.2.1/32", ("tor",)), (B, "192.0.2.2/32", ("tor",))]
    # Without a BGP peer there is nothing to send the route to.
    assert all(a.kind == "l2" for a in manual.merge((), [Kind("l2"), Kind("bgp")]))


def test_wait_applied_returns_after_a_reconcile_that_saw_the_change() -> None:
    async def scenario() -> list[str]:
        manual = ManualAddresses(lambda: None)
        order: list[str] = []
        manual.merge((), [])  # a reconcile in progress, from before the change
        generation = manual.add(A)

        async def waiter() -> None:
            await manual.wait_applied(generation)
            order.append("applied")

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        manual.applied()  # that reconcile did not see A
        await asyncio.sleep(0)
        order.append("old reconcile done")
        manual.merge((), [Kind("l2")])
        manual.applied()
        await task
        return order

    assert asyncio.run(scenario()) == ["old reconcile done", "applied"]


def test_diff_names_peer_owner_and_announcement_changes() -> None:
    alive, dead = PeerStatus("member", "node2", "alive", 3.0), PeerStatus("member", "node2", "dead")
    old = Observation({alive.key: alive}, frozenset({("192.0.2.9", "l2")}),
                      {"192.0.2.1": "node2"})
    new = Observation({dead.key: dead}, frozenset({("192.0.2.1", "l2")}),
                      {"192.0.2.1": "node1"})
    events = diff(old, new, "node1")
    assert [(e.kind, e.address, e.owner, e.previous_owner, e.previous_state) for e in events] == [
        ("peer", "", "", "", "alive"),
        ("owner", "192.0.2.1", "node1", "node2", ""),
        ("withdraw", "192.0.2.9", "node1", "", ""),
        ("announce", "192.0.2.1", "node1", "", "")]
    assert events[0].peer == dead
    assert diff(new, new, "node1") == []


def test_a_subscriber_that_falls_behind_is_dropped() -> None:
    async def scenario() -> tuple[bool, list[Event | None]]:
        bus = EventBus(queue_size=2)
        sub = Subscription(bus, 2)  # bus.subscribe() needs a daemon
        bus._subscribers.add(sub)
        for i in range(3):
            bus.publish(Event("announce", address=f"192.0.2.{i}"))
        got = [await sub.get(), await sub.get()]
        return sub.lost, got

    lost, got = asyncio.run(scenario())
    assert lost and got[0] is not None and got[0].address == "192.0.2.1" and got[1] is None


@click.command()
@api_options
def _api_flags(**params: Any) -> SimpleNamespace:
    return SimpleNamespace(**params)


def _args(*argv: str) -> SimpleNamespace:
    return _api_flags.main(list(argv), standalone_mode=False)


def test_api_flags() -> None:
    assert check_arguments(_args()) is None
    assert _args().api_socket == "/run/skein/speaker.sock"
    assert "TLS only" in (check_arguments(_args("--api-address", "tcp://127.0.0.1:1")) or "")
    assert "cannot read" in (check_arguments(_args(
        "--api-address", "tcp://127.0.0.1:1", "--api-tls-cert", "/nonexistent",
        "--api-tls-key", "/nonexistent")) or "")
    assert "HOST:PORT" in (check_arguments(_args("--metrics-address", "x")) or "")


def test_cli_helpers() -> None:
    assert [duration(s) for s in (None, 5, 65, 3700, 90000)] == ["-", "5s", "1m5s", "1h1m",
                                                                  "1d1h"]
    assert table([("10.0.0.1", "l2")], ("ADDRESS", "MODE")).splitlines() == [
        "ADDRESS   MODE", "10.0.0.1  l2"]


def test_a_conflict_event_reads_as_what_happened() -> None:
    from speaker.api.server import event_message
    from speaker.cli.events import event_dict, event_line

    event = Event("conflict", time=0.0, address="10.99.0.200", mode="l2", owner="node1",
                  interface="eth0", mac="02:de:ad:00:00:01", detail="gratuitous ARP")
    message = event_message(event, "node1")
    assert event_dict(message) == {
        "kind": "conflict", "time": 0.0, "node": "node1", "initial": False,
        "address": "10.99.0.200", "mode": "l2", "interface": "eth0",
        "mac": "02:de:ad:00:00:01", "detail": "gratuitous ARP"}
    assert event_line(message).endswith(
        "node1: conflict 10.99.0.200 (l2) on eth0 claimed by 02:de:ad:00:00:01 "
        "(gratuitous ARP); announced again")


# -- the daemon's plan (what the API serves): a change re-plans only its Services -------

POOL4, POOL6 = "198.51.100.0/29", "2001:db8::/125"
IPS = ["198.51.100.1", "198.51.100.2", "198.51.100.3", "2001:db8::1", "203.0.113.9",
       "224.0.0.5"]  # the last two: in no pool, and unannounceable


def _service(name: str, ips: list[str], port: int, share: str | None, local: bool,
             labels: dict[str, str]) -> dict[str, Any]:
    doc = lb_service(name, *ips, port=port, policy="Local" if local else "Cluster")
    doc["metadata"]["labels"] = labels
    if share:
        doc["metadata"]["annotations"] = {"metallb.io/allow-shared-ip": share}
    return doc


def _config(aggregate: bool) -> list[dict[str, Any]]:
    aggregation: dict[str, Any] = {"aggregationLength": 30} if aggregate else {}
    nodes = [{"apiVersion": "v1", "kind": "Node",
              "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}},
              "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
             for n, ip in (("n1", "10.0.0.1"), ("n2", "10.0.0.2"))]
    return [*nodes, address_pool("p", POOL4, POOL6),
            l2_advertisement("l2", ["p"]),
            bgp_peer("r", "10.0.0.254", 65000, 65001),
            bgp_advertisement("b", ["p"], **aggregation),
            bgp_advertisement("only-web", ["p"], localPref=200,
                              serviceSelectors=[{"matchLabels": {"app": "web"}}])]


service_specs = st.fixed_dictionaries({
    "ips": st.lists(st.sampled_from(IPS), max_size=2, unique=True),
    "port": st.sampled_from([80, 443]),
    "share": st.sampled_from([None, "k"]),
    "local": st.booleans(),
    "labels": st.sampled_from([{}, {"app": "web"}]),
    "ready_on": st.sampled_from([(), ("n1",), ("n2",), ("n1", "n2")]),
})


def _state(config: list[dict[str, Any]], services: dict[str, dict[str, Any]],
           parser: ManifestParser | None = None) -> Any:
    """The state of a manifests file; through `parser`, unchanged objects stay the same
    objects (as the sources keep them)."""
    docs = list(config)
    for name, spec in sorted(services.items()):
        docs.append(_service(name, spec["ips"], spec["port"], spec["share"], spec["local"],
                             spec["labels"]))
        docs.append(endpoint_slice(name, spec["ready_on"]))
    text = yaml.safe_dump_all(docs)
    return (parser.parse(text.encode()) if parser else parse_manifests(text)).state


LIVE = [frozenset({"n1", "n2"}), frozenset({"n1"}), frozenset({"n2"}), frozenset()]


@settings(max_examples=200, deadline=None)
@given(st.booleans(), st.lists(st.tuples(st.sampled_from(["s1", "s2", "s3", "s4"]),
                                         st.one_of(st.none(), service_specs),
                                         st.sampled_from(LIVE)),
                               min_size=1, max_size=12))
def test_planning_the_changed_services_equals_planning_everything(
        aggregate: bool,
        steps: list[tuple[str, dict[str, Any] | None, frozenset[str]]]) -> None:
    """Services, their EndpointSlices and the live speakers change from step to
    step (a liveness change re-plans only the L2 owners)."""
    config = _config(aggregate)
    planner = Planner("n1", None, False)
    parser = ManifestParser()
    services: dict[str, dict[str, Any]] = {}
    previous: tuple[Announcement, ...] = ()
    for name, spec, live in steps:
        if spec is None:
            services.pop(name, None)
        else:
            services[name] = spec
        state = _state(config, services, parser)
        got = planner.plan(state, live)
        want = Planner("n1", None, False).plan(state, live)
        assert got.desired == want.desired
        assert got.sessions == want.sessions
        assert set(got.problems) == set(want.problems)
        assert planner.plan(state, live) is got  # the same state again: nothing re-planned
        if got.delta is not None and got.desired is not previous:  # planned by change
            added, removed = got.delta
            kept = [a for a in previous if all(a is not r for r in removed)]
            assert sorted(map(id, (*kept, *added))) == sorted(map(id, got.desired))
        previous = got.desired


def test_a_liveness_change_that_moves_no_owner_keeps_the_plan_object() -> None:
    """A heartbeat that lapses and comes back, or a node that owns nothing here,
    gives the same plan object: what follows (announcers, status objects, the
    event bus) takes it as nothing new without looking at every Service."""
    spec = {"ips": [IPS[0]], "port": 80, "share": None, "local": False, "labels": {},
            "ready_on": ("n1", "n2")}
    state = _state(_config(False), {"s1": spec, "s2": {**spec, "ips": [IPS[1]]}})
    planner = Planner("n1", None, False)
    first = planner.plan(state, frozenset({"n1", "n2"})).desired
    assert any(a.kind == "l2" for a in first) and any(a.kind == "bgp" for a in first)
    assert planner.plan(state, frozenset({"n1", "n2", "n3"})).desired is first
    alone = planner.plan(state, frozenset({"n1"})).desired  # n2's addresses come here
    assert alone is not first
    assert alone == Planner("n1", None, False).plan(state, frozenset({"n1"})).desired


def test_a_service_change_that_plans_the_same_keeps_the_plan_object() -> None:
    """A Service changed where no plan looks (the controller's pool annotation, a
    label no advertisement selects) is re-planned to the same entries: the plan
    stays the same object, so nothing downstream takes it as a change."""
    spec = {"ips": [IPS[0]], "port": 80, "share": None, "local": False, "labels": {},
            "ready_on": ("n1", "n2")}
    parser = ManifestParser()
    planner = Planner("n1", None, False)
    live = frozenset({"n1", "n2"})
    first = planner.plan(_state(_config(False), {"s1": spec}, parser), live)
    assert first.desired
    relabelled = _state(_config(False), {"s1": {**spec, "labels": {"team": "a"}}}, parser)
    assert planner.plan(relabelled, live) is first
    selected = _state(_config(False), {"s1": {**spec, "labels": {"app": "web"}}}, parser)
    assert planner.plan(selected, live).desired != first.desired  # only-web: localPref


def test_an_unchanged_plan_keeps_its_entries_and_a_change_is_logged_as_a_diff(
        caplog: Any) -> None:
    config = _config(False)
    planner = Planner("n1", None, False)
    spec = {"ips": ["198.51.100.1"], "port": 80, "share": None, "local": False, "labels": {},
            "ready_on": ()}
    first = planner.plan(_state(config, {"s1": spec}), frozenset({"n1"})).desired
    second = planner.plan(_state(config, {"s1": spec, "s2": {**spec, "ips": ["198.51.100.2"]}}),
                          frozenset({"n1"})).desired
    assert all(any(a is b for b in second) for a in first)  # the same objects, not re-made
    with caplog.at_level("INFO", logger="speaker"):
        log_plan_change(first, second)
    [line] = [r.getMessage() for r in caplog.records]
    assert "+198.51.100.2/32 (bgp to r)" in line and "198.51.100.1" not in line


def test_the_bus_updates_what_is_announced_by_the_entries_that_changed() -> None:
    bus = EventBus()
    one = Announcement(A, "l2", services=("default/a",))
    two = Announcement(A, "bgp", services=("default/a",), prefix=ipaddress.ip_network(A),
                       peers=("r",))
    again = Announcement(A, "bgp", services=("default/b",), prefix=ipaddress.ip_network(A),
                         peers=("r2",))  # the same (address, mode) twice
    plans: list[tuple[Announcement, ...]] = [
        (one,), (one, two), (one, two, again), (two, again), (again,), (), (one,)]
    for plan in plans:
        bus._follow(plan)
        assert bus._local_announcements() == frozenset(
            (str(a.address), a.kind) for a in plan)
        assert bus._local_announcements() is bus._local_announcements()


class FakeAnnouncer:
    def __init__(self, kind: str, assign_to_lo: bool) -> None:
        self.kind = kind
        self.assign_to_lo = assign_to_lo
        self.applied: list[int] = []

    async def apply(self, desired: Any) -> None:
        self.applied.append(len(desired))

    async def reassert(self) -> None:
        pass

    async def close(self) -> None:
        pass


class FakeLiveness:
    ready = True

    def live(self) -> frozenset[str]:
        return frozenset({"n1"})

    def set_members(self, members: Any) -> None:
        pass


def test_a_resync_with_nothing_new_skips_only_what_cannot_need_it(tmp_path: Any) -> None:
    """The BGP announcer is not given the same plan again (its sessions keep it), unless
    it keeps addresses on lo (the resync repairs those); layer 2 always is."""
    from foundation.kube.sources.file import FileSource
    from speaker.daemon import Daemon

    path = tmp_path / "m.yaml"
    docs = [*_config(False), _service("s1", ["198.51.100.1"], 80, None, False, {})]
    path.write_text(yaml.safe_dump_all(docs))
    bgp, on_lo, l2 = (FakeAnnouncer("bgp", False), FakeAnnouncer("bgp", True),
                      FakeAnnouncer("l2", False))
    daemon = Daemon("n1", FileSource(str(path)), FakeLiveness(),  # type: ignore[arg-type]
                    [bgp, on_lo, l2])

    async def go() -> None:
        daemon.source.start()
        daemon.state = daemon.source.snapshot()
        for _ in range(3):
            await daemon.reconcile()
        daemon.source.close()

    asyncio.run(go())
    assert bgp.applied == [2]  # once (one L2 and one BGP entry), then skipped
    assert on_lo.applied == [2, 2, 2] and l2.applied == [2, 2, 2]


class NotReadyYet(FakeLiveness):
    ready = False

    async def start(self, on_change: Any) -> None:
        self.on_change = on_change

    async def leave(self) -> None:
        pass

    async def close(self) -> None:
        pass


def test_the_first_plan_the_api_waits_for_is_one_made_with_the_liveness_ready(
        tmp_path: Any) -> None:
    """A plan made before the liveness is ready elects no layer 2 owner: the API
    (which may end the speaker when it cannot start) waits for the one after."""
    from foundation.kube.sources.file import FileSource
    from speaker.daemon import Daemon

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump_all(
        [*_config(False), _service("s1", ["198.51.100.1"], 80, None, False, {})]))
    liveness = NotReadyYet()
    announcer = FakeAnnouncer("l2", False)
    daemon = Daemon("n1", FileSource(str(path)), liveness,  # type: ignore[arg-type]
                    [announcer], resync=0.05)

    async def go() -> None:
        running = asyncio.create_task(daemon.run())
        while len(announcer.applied) < 2:  # reconciled (resyncs), not ready yet
            await asyncio.sleep(0.01)
        assert not daemon.first_applied.is_set()
        liveness.ready = True
        await asyncio.wait_for(daemon.first_applied.wait(), 30)
        daemon.stop()
        await running

    asyncio.run(go())
