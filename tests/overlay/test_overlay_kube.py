"""skein-agent following Nodes through the Kubernetes API (list + watch with
the official client) instead of a manifests file.  There is no API server
here: the peer data comes from the list/watch stand-in of tests/kube, bound to
an address inside the lab (its listening socket is opened while the test's
thread is in a lab namespace), so the agents in the node namespaces reach it
over the underlay like a real control plane."""

from __future__ import annotations

import os
import time

from foundation.netlink import netns
from lab.cluster import Lab, scripts_dir
from lab.traffic import ping
from tests.kube.apiserver import FakeApiServer

API_INDEX = 5  # the stand-in's address on the underlay: .5


def test_agents_follow_nodes_through_the_api(tag, tmp_path):
    with Lab(nodes=2, tag=tag) as lab:
        api_ns = lab.add_client("api", API_INDEX)
        fd = netns.open_netns(api_ns.path)
        try:
            with netns.entered_fd(fd):
                api = FakeApiServer(host=lab.host(API_INDEX)).start()
        finally:
            os.close(fd)
        try:
            for node in lab.nodes.values():
                api.put(lab.node_object(node))
            kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
            for node in lab.nodes.values():
                argv = [os.path.join(scripts_dir(), "skein-agent"), "--node", node.name,
                        "--kubeconfig", kubeconfig, "--cni-conf-dir", node.conf_dir,
                        "--ipam-data-dir", node.data_dir, "--socket", node.agent_socket,
                        "--cluster-cidr", str(lab.cluster_cidr)]
                lab.spawn(node.ns, *argv, log=os.path.join(node.workdir, "agent.log"))
            n1, n2 = lab.nodes["node1"], lab.nodes["node2"]
            deadline = time.monotonic() + 20
            while not (os.path.exists(n1.conflist_path) and os.path.exists(n2.conflist_path)):
                assert time.monotonic() < deadline, open(os.path.join(n1.workdir,
                                                                      "agent.log")).read()
                time.sleep(0.05)
            a, b = lab.add_pod(n1, "a"), lab.add_pod(n2, "b")
            assert ping(a.ns, b.address()) and ping(b.ns, a.address())
            # A Node deleted through the API: its route goes on the other node.
            api.delete("v1", "Node", "", n2.name)
            deadline = time.monotonic() + 10
            while n2.pod_cidr in n1.ns.ip("route", "show", "proto", "83").stdout:
                assert time.monotonic() < deadline, "the watch did not remove node2"
                time.sleep(0.05)
            api.put(lab.node_object(n2))
            deadline = time.monotonic() + 10
            while not ping(a.ns, b.address(), wait=1):
                assert time.monotonic() < deadline, "node2 did not come back through the watch"
        finally:
            api.stop()
