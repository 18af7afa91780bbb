"""LeaseLiveness (speaker.membership.lease) against the API-server stand-in.

Durations here are 1 s (leaseDurationSeconds is whole seconds) with renewals
every 0.2 s; every wait polls with a deadline, nothing asserts how long a step
took.  "At once" (a speaker that leaves) is shown by a 60 s lease: nothing but
the DELETE can make it go within the test's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from foundation.kube.sources.kube import KubeClient
from speaker.membership.lease import LABEL, LeaseLiveness, LeaseView, lease_name
from tests.kube.apiserver import FakeApiServer

NS = "skein-system"
DEADLINE = 20.0
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer().start()
    yield server
    server.stop()


async def until(what: str, condition: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def client(api: FakeApiServer, tmp_path: Any) -> KubeClient:
    return KubeClient.from_kubeconfig(str(api.kubeconfig(tmp_path / "kubeconfig")))


class Speakers:
    """Several LeaseLiveness on one stand-in, each recording its on_change calls."""

    def __init__(self, api: FakeApiServer, tmp_path: Any, names: list[str],
                 duration: int = 1, renew_interval: float = 0.2) -> None:
        self.api = api
        self.names = names
        self.members: dict[str, tuple[Any, ...]] = {n: () for n in names}
        self.nodes = {n: LeaseLiveness(n, client(api, tmp_path), namespace=NS,
                                       duration=duration, renew_interval=renew_interval)
                      for n in names}
        self.changes: dict[str, list[tuple[frozenset[str], frozenset[str]]]] = {
            n: [] for n in names}

    async def start(self) -> None:
        for name, node in self.nodes.items():
            node.set_members(self.members)
            await node.start(lambda j, lft, n=name: self.changes[n].append((j, lft)))

    def sees(self, viewers: list[str], live: set[str]) -> bool:
        return all(self.nodes[v].ready and self.nodes[v].live() == live for v in viewers)

    def lease(self, name: str) -> dict[str, Any] | None:
        with self.api.cond:
            return self.api.state.objects.get(
                ("coordination.k8s.io", "v1", "leases"), {}).get((NS, lease_name(name)))

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.close()
            node.client.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_speakers_see_each_other_join_and_a_killed_one_expire(api, tmp_path):
    async def scenario() -> None:
        s = Speakers(api, tmp_path, ["a", "b", "c"])
        try:
            await s.start()
            await until("all three see all three", lambda: s.sees(["a", "b", "c"],
                                                                 {"a", "b", "c"}))
            lease = s.lease("b")
            assert lease is not None
            assert lease["spec"]["holderIdentity"] == "b"
            assert lease["spec"]["leaseDurationSeconds"] == 1
            assert MICRO_TIME.match(lease["spec"]["renewTime"])
            assert lease["metadata"]["labels"][LABEL[0]] == LABEL[1]
            assert any("c" in joined for joined, _ in s.changes["a"])
            # Killed: renewals stop, nothing is deleted.
            await s.nodes["c"].close()
            await until("a and b see c expire", lambda: s.sees(["a", "b"], {"a", "b"}))
            assert s.lease("c") is not None, "the killed speaker's lease stays until it expires"
            assert any("c" in left for _, left in s.changes["a"])
            # Restarted: the same Lease is taken over and c is live again.
            s.nodes["c"] = LeaseLiveness("c", client(api, tmp_path), namespace=NS,
                                         duration=1, renew_interval=0.2)
            s.nodes["c"].set_members(s.members)
            await s.nodes["c"].start(lambda j, lft: None)
            await until("c is back", lambda: s.sees(["a", "b", "c"], {"a", "b", "c"}))
        finally:
            await s.close()

    run(scenario())


def test_leave_deletes_the_lease_and_peers_see_it_at_once(api, tmp_path):
    async def scenario() -> None:
        # A 60 s lease: within the deadline only the DELETE can make b go.
        s = Speakers(api, tmp_path, ["a", "b"], duration=60, renew_interval=0.2)
        try:
            await s.start()
            await until("both see both", lambda: s.sees(["a", "b"], {"a", "b"}))
            await s.nodes["b"].leave()
            assert s.lease("b") is None
            await until("a sees b leave", lambda: s.nodes["a"].live() == {"a"})
            assert s.lease("b") is None, "no renewal in flight re-created the lease"
        finally:
            await s.close()

    run(scenario())


def test_nodes_that_are_not_members_do_not_count(api, tmp_path):
    async def scenario() -> None:
        s = Speakers(api, tmp_path, ["a", "b"])
        try:
            await s.start()
            await until("both see both", lambda: s.sees(["a", "b"], {"a", "b"}))
            s.nodes["a"].set_members({"a": ()})  # b's Node object is gone
            assert s.nodes["a"].live() == {"a"}
            assert s.changes["a"][-1] == (frozenset(), frozenset({"b"}))
        finally:
            await s.close()

    run(scenario())


def test_conflicts_are_read_again_and_retried(api, tmp_path, caplog):
    caplog.set_level(logging.INFO, "speaker.membership")

    async def scenario() -> None:
        s = Speakers(api, tmp_path, ["a"])
        try:
            await s.start()
            await until("a is live", lambda: s.sees(["a"], {"a"}))
            # Someone else writes a's Lease: a's next update carries a stale
            # resourceVersion (409), reads the Lease again and updates that.
            lease = s.lease("a")
            assert lease is not None
            lease = {**lease, "metadata": {**lease["metadata"],
                                           "annotations": {"touched": "yes"}}}
            api.put(lease)
            await until("a renewed over the concurrent write", lambda: (
                (s.lease("a") or {}).get("metadata", {}).get("annotations") == {"touched": "yes"}
                and s.lease("a")["spec"]["renewTime"] != lease["spec"]["renewTime"]))
            # Injected conflicts, as a racing writer would cause, twice in a row.
            puts = len(api.requests("PUT"))
            gets = len([r for r in api.requests("GET")
                        if r.path.endswith("/leases/skein-speaker-a")])
            api.conflict(2)
            await until("renewals go on", lambda: len(api.requests("PUT")) >= puts + 4)
            assert len([r for r in api.requests("GET")
                        if r.path.endswith("/leases/skein-speaker-a")]) >= gets + 2
            assert s.nodes["a"].live() == {"a"}
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        finally:
            await s.close()

    run(scenario())


def test_api_down_backs_off_freezes_the_view_and_recovers(api, tmp_path, caplog):
    caplog.set_level(logging.INFO, "speaker.membership")

    async def scenario() -> None:
        s = Speakers(api, tmp_path, ["a", "b"])
        try:
            await s.start()
            await until("both see both", lambda: s.sees(["a", "b"], {"a", "b"}))
            before = len(api.state.requests)
            api.fail(30, 503)
            api.end_watches()  # the watches reconnect into the outage
            await until("the outage is used up", lambda: not api.state.failures)
            assert len(api.state.requests) >= before + 30
            await until("both see both again", lambda: s.sees(["a", "b"], {"a", "b"}))
            stamp = (s.lease("a") or {})["spec"]["renewTime"]
            await until("a renews again", lambda: (s.lease("a") or {})["spec"]["renewTime"]
                        != stamp)
            # The speaker logs the recovery once the server's answer is back,
            # which may be a moment after the server stored the renewal.
            await until("the recovery is logged", lambda: [
                r for r in caplog.records if "renewed again" in r.getMessage()])
            lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            # One line per problem per speaker, not one per attempt.
            assert 1 <= len([m for m in lines if "renewal failed" in m]) <= 2
            assert len([m for m in lines if "list/watch failed" in m]) <= 2
        finally:
            await s.close()

    run(scenario())


def test_view_uses_the_observation_time_not_the_remote_clock():
    def lease(name: str, renew: str, duration: int = 4) -> dict[str, Any]:
        return {"metadata": {"name": lease_name(name)},
                "spec": {"holderIdentity": name, "renewTime": renew,
                         "leaseDurationSeconds": duration}}

    view = LeaseView("a", 4.0, members=frozenset({"a", "b", "c"}))
    # b's clock is a year behind, c's a year ahead: neither matters.
    view.observe(lease("b", "2025-01-01T00:00:00.000000Z"), now=100.0)
    view.observe(lease("c", "2027-01-01T00:00:00.000000Z"), now=100.0)
    assert view.live(103.9) == {"b", "c"}
    assert view.live(104.0) == frozenset()
    # The same record seen again is no renewal; a changed renewTime is.
    view.observe(lease("b", "2025-01-01T00:00:00.000000Z"), now=103.0)
    view.observe(lease("c", "2027-01-01T00:00:01.000000Z"), now=103.0)
    assert view.live(105.0) == {"c"}
    # Blind (no list/watch): nothing expires after the moment it went blind...
    view.frozen_at = 105.0
    assert view.live(500.0) == {"c"}
    # ...and the list that ends it gives every Lease a fresh duration.
    view.replace([lease("c", "2027-01-01T00:00:01.000000Z")], now=500.0, refresh=True)
    view.frozen_at = None
    assert view.live(503.0) == {"c"}
    assert view.live(504.0) == frozenset()
    # A deleted Lease: its holder is gone at once.
    view.forget(lease("c", ""))
    assert view.records == {}


def test_durations_are_checked():
    with pytest.raises(ValueError):
        LeaseLiveness("a", None, duration=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LeaseLiveness("a", None, duration=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LeaseLiveness("a", None, duration=2, renew_interval=2)  # type: ignore[arg-type]


def test_skein_speaker_picks_the_liveness_by_source(api, tmp_path, capsys):
    from foundation.kube.cli import parse
    from foundation.kube.sources.kube import KubeSource
    from speaker import main
    from speaker.membership.combined import CombinedLiveness
    from speaker.membership.udp import UdpMembership

    assert main.main(["--node", "a", "--manifests", "x.yaml", "--liveness", "lease"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--liveness lease needs the Kubernetes API" in err[0]
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    args = parse(main.command, ["--node", "a", "--kubeconfig", kubeconfig, "--namespace", "ns1"])
    args.liveness = "heartbeat+lease"  # what main() resolves the default to with --kubeconfig
    combined = main._liveness(args, KubeSource(client(api, tmp_path)))
    assert isinstance(combined, CombinedLiveness)
    assert (combined.leases.namespace, combined.leases.duration,
            combined.heartbeats.view.dead_after) == ("ns1", 4, 0.2)
    args.liveness = "lease"
    liveness = main._liveness(args, KubeSource(client(api, tmp_path)))
    assert isinstance(liveness, LeaseLiveness)
    assert (liveness.namespace, liveness.duration, liveness.renew_interval) == ("ns1", 4, 1.0)
    args.liveness = "heartbeat"
    assert isinstance(main._liveness(args, KubeSource(client(api, tmp_path))), UdpMembership)


class ApiLab:
    """A netns lab of three nodes, a client and the API stand-in bound inside the lab
    (as tests/overlay/test_overlay_kube.py does), serving one L2 Service."""

    LB = "10.99.0.200"

    def __init__(self, lab: Any, tmp_path: Any) -> None:
        import os

        from foundation.netlink import netns
        from lab.speakers import address_pool, l2_advertisement, lb_service, start_name_server

        self.lab = lab
        self.client_ns = lab.add_client("cl", 100)
        api_ns = lab.add_client("api", 5)
        fd = netns.open_netns(api_ns.path)
        try:
            with netns.entered_fd(fd):
                self.server = FakeApiServer(host=lab.host(5)).start()
        finally:
            os.close(fd)
        for obj in [*(lab.node_object(n) for n in lab.nodes.values()),
                    address_pool("lab", "10.99.0.200-10.99.0.215"),
                    l2_advertisement("l2", pools=["lab"]), lb_service("web", self.LB)]:
            self.server.put(obj)
        self.kubeconfig = str(self.server.kubeconfig(tmp_path / "kubeconfig"))
        self.speakers: dict[str, Any] = {}
        for node in lab.nodes.values():
            start_name_server(lab, node)

    def start(self, node: Any, *flags: str) -> None:
        import os

        from lab.cluster import scripts_dir

        argv = [os.path.join(scripts_dir(), "skein-speaker"), "--node", node.name,
                "--kubeconfig", self.kubeconfig, "--assign-to-lo",
                "--api-socket", os.path.join(node.workdir, "speaker.sock"),
                "--namespace", NS, *flags]
        self.speakers[node.name] = self.lab.spawn(node.ns, *argv, log=os.path.join(
            node.workdir, "speaker.log"))

    def leases(self) -> dict[Any, Any]:
        return dict(self.server.state.objects.get(("coordination.k8s.io", "v1", "leases"), {}))

    def answering(self) -> set[str]:
        """Names of the nodes answering ARP for LB."""
        from lab.speakers import arping_macs, node_mac

        macs = {node_mac(n): n.name for n in self.lab.nodes.values()}
        return {macs[m] for m in arping_macs(self.client_ns, self.LB)}

    def close(self) -> None:
        from lab.speakers import stop_speaker

        for proc in self.speakers.values():
            stop_speaker(proc)
        self.server.stop()


def test_lab_speakers_elect_by_lease_and_fail_over_after_kill(tmp_path):
    """Three skein-speakers in a netns lab follow the stand-in with `--liveness
    lease`: one owner answers ARP; SIGKILL'd, its Lease stays and expires, and
    another node takes the address over; that one SIGTERM'd deletes its Lease and
    the last node takes over."""
    from lab.cluster import Lab
    from lab.speakers import poll, speaker_log, stop_speaker, tcp_name

    with Lab(nodes=3) as lab:
        api = ApiLab(lab, tmp_path)
        lb = api.LB
        try:
            for node in lab.nodes.values():
                api.start(node, "--liveness", "lease", "--lease-duration", "1",
                          "--lease-renew", "0.2")
            poll(lambda: len(api.leases()) == 3, 20, "three Leases")
            answers = poll(api.answering, 20, f"an answer for {lb}")
            assert len(answers) == 1, answers
            (owner,) = answers
            assert tcp_name(api.client_ns, lb) == owner

            stop_speaker(api.speakers.pop(owner), kill=True)
            successor = poll(lambda: tcp_name(api.client_ns, lb) not in (None, owner)
                             and tcp_name(api.client_ns, lb), 20, "a new owner serving TCP")
            log = speaker_log(lab.nodes[successor])
            assert f"of {owner} expired or deleted: considered dead" in log
            assert (NS, lease_name(owner)) in api.leases(), "killed: its Lease was left to expire"
            assert poll(api.answering, 20, f"an answer for {lb}") == {successor}

            # SIGTERM: the Lease is deleted on the way out and the last node takes over.
            assert stop_speaker(api.speakers.pop(successor)) == 0
            assert (NS, lease_name(successor)) not in api.leases()
            (last,) = api.speakers
            poll(lambda: tcp_name(api.client_ns, lb) == last, 20, "the last node serving TCP")
        finally:
            api.close()


def block_heartbeats(node: Any) -> None:
    """Drop the node's heartbeats both ways, in its own namespace (the speaker stays healthy)."""
    node.ns.run("nft", "-f", "-", input=(
        "table inet skhb {\n"
        "  chain in { type filter hook input priority 0; udp dport 7946 drop; }\n"
        "  chain out { type filter hook output priority 0; udp dport 7946 drop; }\n"
        "}\n"))


def test_lab_default_liveness_fails_over_on_heartbeats_and_keeps_one_owner_without_them(
        tmp_path):
    """The default with the API, heartbeats + Leases, with 60 s Leases so that only
    the heartbeats can move an address within the test's deadlines: a SIGKILL'd
    owner's address moves while its Lease is still there, and the log says the
    heartbeats decided.  Then the new owner's heartbeats are dropped (nft in its
    namespace): the other node sees its Lease renewed and counts it alive again, so
    in the end one node, the owner, answers ARP and serves TCP."""
    from lab.cluster import Lab
    from lab.speakers import poll, speaker_log, stop_speaker, tcp_name

    with Lab(nodes=3) as lab:
        api = ApiLab(lab, tmp_path)
        lb = api.LB
        try:
            for node in lab.nodes.values():
                api.start(node, "--lease-duration", "60", "--lease-renew", "0.5")
            poll(lambda: len(api.leases()) == 3, 20, "three Leases")
            answers = poll(api.answering, 20, f"an answer for {lb}")
            assert len(answers) == 1, answers
            (owner,) = answers

            stop_speaker(api.speakers.pop(owner), kill=True)
            successor = poll(lambda: tcp_name(api.client_ns, lb) not in (None, owner)
                             and tcp_name(api.client_ns, lb), 20, "a new owner serving TCP")
            assert (NS, lease_name(owner)) in api.leases()
            assert (f"member {owner}: dead (heartbeats stopped, Lease not renewed since)"
                    in speaker_log(lab.nodes[successor]))
            (other,) = set(api.speakers) - {successor}

            block_heartbeats(lab.nodes[successor])
            poll(lambda: f"member {successor}: alive (its Lease (renewed after its heartbeats "
                 "stopped))" in speaker_log(lab.nodes[other]), 20,
                 f"{other} counting {successor} alive by its Lease")
            poll(lambda: api.answering() == {successor}, 20, f"{successor} alone answering")
            for _ in range(3):  # and it stays so
                assert api.answering() == {successor}
            assert tcp_name(api.client_ns, lb) == successor
        finally:
            api.close()
