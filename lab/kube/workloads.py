"""The Kubernetes objects the kube lab, its tests and the benchmarks deploy:
a namespace, a busybox DaemonSet on every node and LoadBalancer Services in
front of it, as YAML for `kubectl apply -f -`.  One home, so that every
caller runs the same workload the same way (busybox from the lab's image
cache, never pulled; a one-second grace period, so deletions do not wait)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from lab.kube.image import BUSYBOX_IMAGE

# busybox httpd on 8080 serving `hostname` (which pod answered).
HOSTNAME_SERVER = ["sh", "-c", "mkdir -p /w && hostname > /w/index.html && "
                   "exec httpd -f -p 8080 -h /w"]
# busybox httpd on 8080 whose /cgi-bin/ip answers with the client's address.
WHOAMI_SERVER = [
    "sh", "-c",
    "mkdir -p /w/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\n"
    "echo $REMOTE_ADDR\\n' > /w/cgi-bin/ip && chmod +x /w/cgi-bin/ip && "
    "exec httpd -f -p 8080 -h /w"]
SLEEPER = ["sleep", "1000000"]


def namespace(name: str) -> str:
    return f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"


def daemonset(ns: str, app: str, command: Sequence[str], *, port: int | None = 8080,
              ready_on_port: bool = False) -> str:
    """A DaemonSet `app` (label app=`app`) running `command` in busybox on every
    node; `ready_on_port`: Ready only once `port` accepts connections."""
    text = f"""apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {app}
  namespace: {ns}
spec:
  selector:
    matchLabels: {{app: {app}}}
  template:
    metadata:
      labels: {{app: {app}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: {app}
        image: {BUSYBOX_IMAGE}
        imagePullPolicy: Never
        command: {json.dumps(list(command))}
"""
    if port is not None:
        text += f"        ports:\n        - containerPort: {port}\n"
        if ready_on_port:
            text += f"        readinessProbe:\n          tcpSocket: {{port: {port}}}\n" \
                    "          periodSeconds: 1\n"
    return text


def lb_service(ns: str, name: str, pool: str, app: str, *, port: int = 80,
               target_port: int = 8080, local: bool = False) -> str:
    """A Service of type LoadBalancer for the pods labelled app=`app`, its
    address from IPAddressPool `pool`; `local`: externalTrafficPolicy Local."""
    policy = "  externalTrafficPolicy: Local\n" if local else ""
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
  annotations:
    metallb.io/address-pool: {pool}
spec:
  type: LoadBalancer
{policy}  selector: {{app: {app}}}
  ports:
  - name: http
    port: {port}
    targetPort: {target_port}
"""


def documents(*docs: str) -> str:
    """One multi-document YAML text."""
    return "---\n".join(docs)
