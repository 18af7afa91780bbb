"""The `skein` plugin's commands: ADD, DEL, CHECK, STATUS and GC.

ADD wires a pod like the reference `bridge` plugin: bridge, veth pair, IPAM
(delegated by exec, as the spec says), addresses and routes in the pod, the
gateway on the bridge, masquerading.  Order matters for "nothing left behind":
everything that can be checked is checked before anything is created, and
every step that fails undoes the steps before it (veth removed, lease given
back).  Kernel work lives in bridge.py / veth.py / masq.py; this module only
sequences it.  The netlink modules are imported inside the commands, so
VERSION and the error paths never pay for them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cni_plugin.config import NetConf, parse_netconf
from cni_plugin.ipam_exec import Ipam
from foundation.cni import spec
from foundation.cni.names import host_veth_name
from foundation.cni.skel import Request
from foundation.cni.spec import CniError

if TYPE_CHECKING:  # host.py brings the netlink modules: only the commands load them
    from cni_plugin.config import VxlanConf
    from cni_plugin.host import ColdHost
    from cni_plugin.nft import Nft
    from foundation.netlink import Link, RouteSocket

    OverlayDevice = Callable[[RouteSocket, VxlanConf], Link]


def _gateway_for(address: str) -> str:
    """The reference plugin's default gateway: the subnet's first address."""
    network = ipaddress.ip_interface(address).network
    return str(network.network_address + 1)


def plan_routes(conf: NetConf, ips: list[dict[str, Any]],
                ipam_routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """IPAM's routes plus a default route per family when isDefaultGateway."""
    routes = [dict(r) for r in ipam_routes]
    if not conf.is_default_gateway:
        return routes
    for ip in ips:
        version = ipaddress.ip_interface(ip["address"]).version
        default = "0.0.0.0/0" if version == 4 else "::/0"
        if any(ipaddress.ip_network(r["dst"], strict=False) == ipaddress.ip_network(default)
               for r in routes):
            continue
        routes.append({"dst": default, "gw": ip["gateway"]})
    return routes


def build_result(conf: NetConf, req: Request, bridge: Any, host_veth: Any, pod_link: Any,
                 ips: list[dict[str, Any]], routes: list[dict[str, Any]],
                 ipam_dns: dict[str, Any]) -> dict[str, Any]:
    """The ADD result, appended to a chained prevResult when there is one."""
    prev = conf.prev_result or {"interfaces": [], "ips": [], "routes": [], "dns": {}}
    base = len(prev["interfaces"])
    interfaces = [
        {"name": bridge.name, "mac": bridge.mac},
        {"name": host_veth.name, "mac": host_veth.mac},
        {"name": pod_link.name, "mac": pod_link.mac, "sandbox": req.netns, "mtu": pod_link.mtu},
    ]
    our_ips = [{**ip, "interface": base + 2} for ip in ips]
    return {
        "interfaces": [*prev["interfaces"], *interfaces],
        "ips": [*prev["ips"], *our_ips],
        "routes": [*prev["routes"], *routes],
        "dns": conf.dns or ipam_dns or prev.get("dns") or {},
    }


def agent_unreachable(conf: NetConf) -> str | None:
    """Readiness as seen by the executable: it runs this only when the fast
    path failed, so an overlay network that names an agent socket is not ready."""
    if conf.vxlan is not None and conf.agent_socket:
        return f"skein-agent is not running (no answer on {conf.agent_socket})"
    return None


class SkeinPlugin:
    """Implements foundation.cni.skel.Plugin.  Its collaborators are passed in:
    `readiness` returns why the node cannot take pods now, or None (the agent
    passes its own check); `overlay` gives the VXLAN device of a config with a
    `vxlan` section (by default `vxlan.ensure_device`, which verifies it from
    scratch; the agent, which owns the device, passes what it already knows,
    vxlan.KnownDevice); `ipam` runs the IPAM plugin (by default it is exec'd;
    the agent runs skein-ipam in its own process); `nft` runs the `nft` of
    `ipMasq` (by default the binary)."""

    def __init__(self, readiness: Callable[[NetConf], str | None] = agent_unreachable,
                 host: ColdHost | None = None, overlay: OverlayDevice | None = None,
                 ipam: Ipam | None = None, nft: Nft | None = None) -> None:
        self.readiness = readiness
        self._host = host
        self._overlay = overlay
        self.ipam = ipam or Ipam()
        self.nft = nft

    @property
    def host(self) -> ColdHost:
        if self._host is None:
            from cni_plugin.host import ColdHost

            self._host = ColdHost()
        return self._host

    def add(self, req: Request) -> dict[str, Any]:
        conf = parse_netconf(req.config)
        from foundation import netlink
        from foundation.netlink import netns

        fd = netns.open_netns(req.netns)
        host = self.host.socket()
        try:
            with netns.entered_fd(fd):
                pod = netlink.open_route_socket()
                taken = netlink.link_index(req.ifname) is not None
            try:
                if taken:
                    raise CniError(spec.ERR_INVALID_ENV,
                                   f"interface {req.ifname} already exists in {req.netns}",
                                   "CNI_IFNAME must name an interface that does not exist yet")
                br, host_veth, ipam_result = self._links_and_lease(conf, req, host, fd)
                try:
                    return self._configure(conf, req, host, pod, br, host_veth, ipam_result)
                except BaseException:
                    with contextlib.suppress(Exception):
                        self.ipam(req, "DEL")
                    with contextlib.suppress(Exception):
                        netlink.delete_link(host, host_veth.index)
                    raise
            finally:
                pod.close()
        finally:
            self.host.release(host)
            os.close(fd)

    def _links_and_lease(self, conf: NetConf, req: Request, host: Any, fd: int
                         ) -> tuple[Any, Any, dict[str, Any]]:
        """Bridge, veth pair and IPAM's result; whichever fails, the other is
        undone.  An exec'd IPAM plugin allocates in a thread of its own while
        this one makes bridge and pair (a second process: real overlap).
        skein-ipam inside the agent allocates after the pair, in this thread:
        handing the pair to a second thread of the agent cost more in thread
        wake-ups on an idle CPU than the overlap saved (cni_plugin/agent)."""
        from cni_plugin import veth
        from foundation import netlink

        ipam = None if self.ipam.runs_in_process(req.config) else Background(
            lambda: self.ipam(req, "ADD"))
        try:
            mtu = conf.mtu
            if conf.vxlan is not None:
                from cni_plugin import vxlan

                overlay = (self._overlay or vxlan.ensure_device)(host, conf.vxlan)
                mtu = mtu or overlay.mtu
            br = self.host.bridge(host, conf.bridge, mtu, conf.promisc_mode)
            host_veth = veth.create_pair(host, host_veth_name(req.container_id, req.ifname),
                                         req.ifname, fd, mtu, br, conf.hairpin_mode,
                                         req.args.get("MAC") or
                                         conf.raw.get("runtimeConfig", {}).get("mac"))
        except BaseException:
            if ipam is not None:
                _release_if_allocated(req, ipam, self.ipam)
            raise
        try:
            ipam_result = self.ipam(req, "ADD") if ipam is None else ipam.result()
        except BaseException:
            with contextlib.suppress(Exception):
                netlink.delete_link(host, host_veth.index)
            raise
        assert ipam_result is not None
        return br, host_veth, ipam_result

    def _configure(self, conf: NetConf, req: Request, host: Any, pod: Any, br: Any,
                   host_veth: Any, ipam_result: dict[str, Any]) -> dict[str, Any]:
        from cni_plugin import masq, veth

        ips = [dict(ip) for ip in ipam_result["ips"]]
        if not ips:
            raise CniError(spec.ERR_IPAM_FAILED, "IPAM returned no address",
                           f"check the ranges of IPAM plugin {conf.ipam_type}")
        if conf.is_gateway:
            for ip in ips:
                ip["gateway"] = ip.get("gateway") or _gateway_for(ip["address"])
        routes = plan_routes(conf, ips, ipam_result.get("routes", []))
        pod_link = veth.configure_pod_side(pod, host_veth, ips, routes)
        if conf.is_gateway:
            for ip in ips:
                iface = ipaddress.ip_interface(ip["address"])
                gateway = ipaddress.ip_interface(f"{ip['gateway']}/{iface.network.prefixlen}")
                self.host.gateway(host, br, gateway, conf.force_address)
        if conf.ip_masq:
            masq.setup(conf.name, req.container_id, req.ifname, [ip["address"] for ip in ips],
                       conf.ip_masq_exclude, self.nft)
        return build_result(conf, req, br, host_veth, pod_link, ips, routes,
                            ipam_result.get("dns") or {})

    def delete(self, req: Request) -> None:
        conf = parse_netconf(req.config)
        # The lease goes while the kernel takes the veth pair down.
        ipam = Background(lambda: self.ipam(req, "DEL"))
        links_error: BaseException | None = None
        try:
            self._delete_links(req)
        except BaseException as exc:  # noqa: BLE001 - raised below, after IPAM's
            links_error = exc
        ipam.result()  # IPAM's error first, as when it ran before the links
        if links_error is not None:
            raise links_error
        if conf.ip_masq:
            from cni_plugin import masq

            masq.teardown(conf.name, req.container_id, req.ifname, self.nft)

    def _delete_links(self, req: Request) -> None:
        from cni_plugin import veth
        from foundation import netlink

        if req.netns:
            self._delete_pod_link(req)
        # Normally gone with the pod end; a leftover of an interrupted ADD is not.
        host_name = host_veth_name(req.container_id, req.ifname)
        if netlink.link_index(host_name) is None:
            return
        # A node end whose peer is in another namespace than this request's is a
        # running pod's (the DEL after a refused duplicate ADD names the intruder's).
        fd = self._netns_fd(req.netns)
        host = self.host.socket()
        try:
            leftover = veth.leftover_index(host, host_name, fd)
            if leftover is not None:
                netlink.delete_link(host, leftover)
        finally:
            self.host.release(host)
            if fd is not None:
                os.close(fd)

    @staticmethod
    def _netns_fd(path: str | None) -> int | None:
        """The request's namespace, None when it has none or it is gone."""
        from foundation.netlink import netns

        if not path:
            return None
        try:
            return netns.open_netns(path)
        except CniError as err:
            if err.code == spec.ERR_UNKNOWN_CONTAINER:
                return None
            raise

    @staticmethod
    def _delete_pod_link(req: Request) -> None:
        """Delete the pod's interface, and with it the node end of the pair.

        The kernel takes both ends out of their namespaces at once, and then
        waits for an RCU barrier before it acknowledges the request: most of
        the time a DEL spends in the kernel comes after the pair is gone.  So
        the request runs in a thread of its own, and DEL returns as soon as
        the node end's name no longer resolves (or the request has failed or
        finished): the runtime is then free to remove the namespace, and a
        new ADD of the same attachment to create the same names.  The agent
        answers meanwhile while the thread waits for the acknowledgement; an
        executable's process ends only when the thread has it."""
        from foundation import netlink
        from foundation.netlink import netns

        try:
            fd = netns.open_netns(req.netns)
        except CniError as err:
            if err.code == spec.ERR_UNKNOWN_CONTAINER:
                return  # the namespace is gone, and with it the interface
            raise
        try:
            with netns.entered_fd(fd):
                pod = netlink.open_route_socket()
        finally:
            os.close(fd)
        try:
            link = netlink.get_link(pod, req.ifname)
        except BaseException:
            pod.close()
            raise
        if link is None:
            pod.close()
            return
        host_name = host_veth_name(req.container_id, req.ifname)
        peer = netlink.link_index(host_name)  # this thread is in the node's namespace

        def delete() -> None:
            try:
                netlink.delete_link(pod, link.index)
            finally:
                pod.close()

        deletion = Background(delete)
        if peer is None or peer != link.peer_index:
            deletion.result()  # not the pair ADD made: nothing to watch
            return
        while not deletion.finished(_UNLIST_POLL):
            if netlink.link_index(host_name) != peer:
                return  # the pair is gone; the kernel's acknowledgement may follow later
        deletion.result()

    def check(self, req: Request) -> None:
        conf = parse_netconf(req.config)
        if conf.prev_result is None:
            raise CniError(spec.ERR_INVALID_CONFIG, "CHECK needs prevResult",
                           "the runtime passes the ADD result as prevResult")
        self.ipam(req, "CHECK")
        from cni_plugin.check import check_attachment

        check_attachment(conf, req)

    def status(self, req: Request) -> None:
        conf = parse_netconf(req.config)
        problem = self.readiness(conf)
        if problem:
            raise CniError(spec.ERR_NOT_AVAILABLE, problem,
                           "start skein-agent on this node; pods cannot be added until then")
        self.ipam(req, "STATUS")

    def gc(self, req: Request) -> None:
        conf = parse_netconf(req.config)
        valid = spec.valid_attachments(req.config)  # refused before IPAM releases anything
        self.ipam(req, "GC")
        if conf.ip_masq:
            from cni_plugin import masq

            masq.collect_garbage(conf.name, valid, self.nft)


# How often a DEL looks whether the kernel has taken the veth pair out yet.
_UNLIST_POLL = 0.0002


class Background:
    """`work()` in a thread of its own; `result()` waits and returns its value
    or raises its exception.  A bare thread, not concurrent.futures: the
    plugin executable pays every import."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self._value = work()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
            self._error = exc

    def finished(self, timeout: float) -> bool:
        """Whether `work()` has returned or raised, waiting up to `timeout` s."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _release_if_allocated(req: Request, adding: Background, ipam: Ipam) -> None:
    """After a failed ADD: give back the address the concurrent IPAM ADD got.
    If that ADD failed itself it allocated nothing, and a DEL would take away
    a lease the attachment held before (a repeated ADD)."""
    try:
        adding.result()
    except Exception:  # noqa: BLE001 - the ADD's own error is the one to report
        return
    with contextlib.suppress(Exception):
        ipam(req, "DEL")

