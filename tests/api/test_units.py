"""The API's pure parts without root: manual merge, event diffs, the bus, flags, CLI helpers."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress

from speaker.api.events import Event, EventBus, Observation, Subscription, diff
from speaker.api.manual import ManualAddresses
from speaker.api.peer_status import PeerStatus
from speaker.api.service import add_arguments, check_arguments
from speaker.cli.common import duration, table
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


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


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
