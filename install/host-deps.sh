#!/usr/bin/env bash
# Installs what Skein's labs and test suite need on a Debian machine, as root:
# Debian packages, then Skein and its test tools into the project's own virtual
# environment (.venv; the system interpreter is left alone).
# Safe to run again: apt and pip skip what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  iproute2 nftables iptables conntrack iputils-ping iputils-arping iperf3 tcpdump procps psmisc
  containernetworking-plugins bird2 gobgpd frr graphviz python3-venv
  shellcheck ruby keepalived ndisc6 openssl util-linux
  # Debian's PyYAML on libyaml 0.2.5 (no depth limit): tests/adversarial parses with it
  python3-yaml
  # the kube lab: a container runtime per node, images built without a registry
  containerd runc podman debootstrap patchelf busybox-static gcc libc6-dev
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  # Another apt (unattended upgrades, a second shell) may hold the dpkg lock: wait for it.
  apt_wait=(-o DPkg::Lock::Timeout=900)
  apt-get "${apt_wait[@]}" update -qq
  # The routers (bird2, frr, gobgpd, keepalived) are test peers run in lab
  # namespaces only: keep their packages from starting them on the host.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod 755 "$guard"
    trap 'rm -f "$guard"' EXIT
  fi
  apt-get "${apt_wait[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$guard" ]; then rm -f "$guard"; trap - EXIT; fi
fi

# The kube lab builds Kubernetes from its Go modules (lab/kube/build.py).
if ! go version >/dev/null 2>&1; then
  echo "host-deps: the kube lab needs Go >= 1.24 on PATH (https://go.dev/doc/install)" >&2
  exit 1
fi

VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
"$VENV/bin/python" -m pip install -q -e '.[test]'
