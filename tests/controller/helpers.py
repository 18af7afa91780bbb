"""Model objects built directly (no YAML) for the allocator and reconcile tests."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from foundation.addresses import AddressRange
from foundation.kube.model import ClusterState, IPAddressPool, Namespace, Service, ServicePort
from foundation.kube.model.metallb import ServiceAllocation
from lab.speakers import poll
from speaker.controller.reconcile import POOL_ANNOTATION

IP = ipaddress.ip_address


def pool(name: str, *ranges: str, auto: bool = True, buggy: bool = False,
         allocation: ServiceAllocation | None = None) -> IPAddressPool:
    return IPAddressPool("metallb-system", name, tuple(AddressRange.parse(r) for r in ranges),
                         auto_assign=auto, avoid_buggy_ips=buggy,
                         service_allocation=allocation)


def svc(name: str, *ports: str, namespace: str = "default", type: str = "LoadBalancer",
        ips: tuple[str, ...] = (), pool_name: str | None = None, share: str | None = None,
        local: bool = False, families: tuple[str, ...] = (), policy: str | None = None,
        ingress: tuple[str, ...] = (), lb_class: str | None = None,
        labels: dict[str, str] | None = None, from_pool: str | None = None) -> Service:
    """A Service; ports as "80" (TCP) or "53/UDP"; `from_pool`: the controller's
    metallb.io/ip-allocated-from-pool annotation."""
    parsed = []
    for p in ports:
        number, _, proto = p.partition("/")
        parsed.append(ServicePort(int(number), proto or "TCP"))
    return Service(namespace, name, type=type, ports=tuple(parsed),
                   external_traffic_policy="Local" if local else "Cluster",
                   requested_ips=tuple(IP(i) for i in ips), address_pool=pool_name,
                   allow_shared_ip=share, load_balancer_class=lb_class,
                   ingress_ips=tuple(IP(i) for i in ingress), ip_families=families,
                   ip_family_policy=policy, labels=labels or {},
                   annotations={POOL_ANNOTATION: from_pool} if from_pool else {})


def state(*objects: Service | IPAddressPool | Namespace) -> ClusterState:
    return ClusterState.from_objects(objects)


DEADLINE = 20.0


def wait_until(what: str, condition: Callable[[], Any],
               deadline: float = DEADLINE) -> Any:
    """`condition`'s first truthy value within `deadline` seconds (the lab's
    `poll`, with the tests' deadline and a finer interval)."""
    return poll(condition, deadline, what, interval=0.02)
