"""A minimal libcni: runs a .conflist's plugins in order (ADD) and in reverse
(DEL), handing each the previous result as `prevResult`, as runtimes do."""

from __future__ import annotations

from typing import Any

from tests.conftest import CniRunner


def plugin_config(conflist: dict[str, Any], plugin: dict[str, Any],
                  prev: dict[str, Any] | None) -> dict[str, Any]:
    conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def add_list(cni: CniRunner, conflist: dict[str, Any], container_id: str,
             netns: str, ifname: str = "eth0") -> dict[str, Any]:
    prev: dict[str, Any] | None = None
    for plugin in conflist["plugins"]:
        res = cni.call(plugin["type"], "ADD", plugin_config(conflist, plugin, prev),
                       container_id=container_id, netns=netns, ifname=ifname)
        if res.code != 0:
            raise AssertionError(f"{plugin['type']} ADD failed: {res.stdout} {res.stderr}")
        prev = res.json
    assert prev is not None
    return prev


def del_list(cni: CniRunner, conflist: dict[str, Any], container_id: str, netns: str,
             prev: dict[str, Any] | None, ifname: str = "eth0") -> None:
    for plugin in reversed(conflist["plugins"]):
        res = cni.call(plugin["type"], "DEL", plugin_config(conflist, plugin, prev),
                       container_id=container_id, netns=netns, ifname=ifname)
        if res.code != 0:
            raise AssertionError(f"{plugin['type']} DEL failed: {res.stdout} {res.stderr}")
