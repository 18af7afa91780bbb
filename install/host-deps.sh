#!/usr/bin/env bash
# Installs what Skein's lab and test suite need on a Debian machine, as root.
# Safe to run again: apt and pip skip what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  iproute2 nftables iputils-ping iputils-arping iperf3 tcpdump procps psmisc
  containernetworking-plugins bird2 gobgpd graphviz python3-pip
  shellcheck ruby keepalived ndisc6
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's own python3 refuses system-wide pip installs unless told otherwise;
# pip versions that do not know the variable ignore it.
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install -q -e '.[test]'
