#!/usr/bin/env bash
# The BGP router VM: BIRD 2 with vagrant/router/bird.conf, a passive peer for
# every node, installing the LoadBalancer routes it learns.  To reach those
# addresses from the machine running Vagrant, route them through this VM:
#   sudo ip route add 198.51.100.0/24 via 192.168.56.5
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
apt-get install -y -qq --no-install-recommends bird2 >/dev/null
echo "net.ipv4.ip_forward = 1" > /etc/sysctl.d/90-skein-router.conf
sysctl --system >/dev/null

install -m 0640 -o root -g bird /skein/vagrant/router/bird.conf /etc/bird/bird.conf
bird -p -c /etc/bird/bird.conf
systemctl enable bird
systemctl restart bird
