"""`skein-lab kube status`: nodes, Skein's pods and a reachability table.

Every probe runs inside the lab: pod to pod through `kubectl exec` (a pod of
the `skein-lab-probe` DaemonSet on every node pings the others) and the
client namespace to every LoadBalancer address of the cluster.
"""

from __future__ import annotations

import subprocess
from typing import Any

from lab.kube.cluster import SKEIN_NAMESPACE, KubeLab
from lab.kube.workloads import SLEEPER, daemonset, documents, namespace

PROBE_NAMESPACE = "skein-lab"
PROBE = documents(namespace(PROBE_NAMESPACE),
                  daemonset(PROBE_NAMESPACE, "probe", SLEEPER, port=None))


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def probes(lab: KubeLab) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = lab.kubectl_json(
        "-n", PROBE_NAMESPACE, "get", "pods", "-l", "app=probe")["items"]
    return [p for p in items if p["status"].get("phase") == "Running"
            and p["status"].get("podIP")]


def ensure_probes(lab: KubeLab) -> None:
    lab.kubectl("apply", "-f", "-", input=PROBE)


def client_connect(lab: KubeLab, ip: str, port: int, timeout: float = 2.0) -> bool:
    code = (f"import socket; socket.create_connection(({ip!r}, {port}), {timeout}).close()")
    proc = lab.client_ns.run("python3", "-c", code, check=False, timeout=timeout + 5)
    return proc.returncode == 0


def report(lab: KubeLab) -> str:
    out: list[str] = []
    nodes = lab.kubectl_json("get", "nodes")["items"]
    rows = [["NODE", "READY", "INTERNAL-IP", "POD-CIDR"]]
    for n in nodes:
        ready = next((c["status"] for c in n["status"].get("conditions", [])
                      if c["type"] == "Ready"), "?")
        ip = next((a["address"] for a in n["status"].get("addresses", [])
                   if a["type"] == "InternalIP"), "?")
        rows.append([n["metadata"]["name"], ready, ip, ",".join(n["spec"].get("podCIDRs", []))])
    out += [_table(rows), ""]
    pods = lab.kubectl_json("-n", SKEIN_NAMESPACE, "get", "pods")["items"]
    rows = [["SKEIN POD", "NODE", "PHASE", "RESTARTS"]]
    for p in pods:
        restarts = sum(c.get("restartCount", 0) for c in p["status"].get("containerStatuses", []))
        rows.append([p["metadata"]["name"], p["spec"].get("nodeName", "?"),
                     p["status"].get("phase", "?"), str(restarts)])
    out += [_table(rows), ""]

    ensure_probes(lab)
    found = probes(lab)
    if len(found) > 1:
        rows = [["PING FROM \\ TO", *[p["spec"]["nodeName"] for p in found]]]
        for src in found:
            row = [f"{src['spec']['nodeName']} ({src['status']['podIP']})"]
            for dst in found:
                proc = lab.kubectl("-n", PROBE_NAMESPACE, "exec", src["metadata"]["name"], "--",
                                   "ping", "-c", "1", "-W", "2", dst["status"]["podIP"],
                                   check=False, timeout=30)
                row.append("ok" if proc.returncode == 0 else "FAIL")
            rows.append(row)
        out += [_table(rows), ""]
    else:
        out += ["(probe pods not running yet: run status again in a few seconds)", ""]

    services = lab.kubectl_json("get", "services", "-A")["items"]
    rows = [["LOADBALANCER", "ADDRESS", "PORT", "FROM CLIENT"]]
    for s in services:
        if s["spec"].get("type") != "LoadBalancer":
            continue
        for ingress in s["status"].get("loadBalancer", {}).get("ingress", []) or [{}]:
            ip = ingress.get("ip", "")
            for port in s["spec"].get("ports", []):
                ok = bool(ip) and client_connect(lab, ip, int(port["port"]))
                rows.append([f"{s['metadata']['namespace']}/{s['metadata']['name']}",
                             ip or "(pending)", str(port["port"]), "ok" if ok else "FAIL"])
    if len(rows) > 1:
        out.append(_table(rows))
    else:
        out.append("no LoadBalancer Services")
    try:
        routes = subprocess.run(["birdc", "-s", str(lab.bird_socket), "show", "route"],
                                capture_output=True, text=True, timeout=10, check=False).stdout
        out += ["", "BIRD (router) routes:", routes.strip()]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "\n".join(out)
