#!/usr/bin/env bash
# Initialises the control plane with kubeadm and installs Skein from
# /skein/install (the repository, synced into the VM), with the VMs' shared
# network interface as the VXLAN underlay; then the example pools.
#   control-plane.sh NODE_IP POD_CIDR TOKEN
set -euo pipefail
NODE_IP=${1:?control-plane IP}
POD_CIDR=${2:?pod network CIDR}
TOKEN=${3:?kubeadm bootstrap token}
SKEIN=/skein/install
export KUBECONFIG=/etc/kubernetes/admin.conf

if [[ ! -f $KUBECONFIG ]]; then
  kubeadm init --apiserver-advertise-address "$NODE_IP" --pod-network-cidr "$POD_CIDR" \
    --token "$TOKEN" --token-ttl 0 --node-name "$(hostname -s)"
fi
install -d -o vagrant -g vagrant /home/vagrant/.kube
install -m 0600 -o vagrant -g vagrant "$KUBECONFIG" /home/vagrant/.kube/config

# The interface that holds NODE_IP: the same name on every VM of one box.
underlay=$(ip -o -4 addr show to "$NODE_IP/32" | awk '{print $2; exit}')
[[ -n $underlay ]] || { echo "no interface holds $NODE_IP" >&2; exit 1; }

manifests=$(mktemp -d)
trap 'rm -rf "$manifests"' EXIT
cp "$SKEIN"/manifests/*.yaml "$manifests"/
sed -i -e "s|^  cluster-cidr: .*|  cluster-cidr: ${POD_CIDR}|" \
       -e "s|^  underlay-device: .*|  underlay-device: ${underlay}|" \
       "$manifests/30-skein-node.yaml"
kubectl apply -f "$manifests"
kubectl wait --for condition=established --timeout=120s crd -l app.kubernetes.io/part-of=skein
kubectl -n skein-system rollout status daemonset/skein-node --timeout=10m
kubectl wait --for condition=Ready --timeout=5m "node/$(hostname -s)"

# ARP/NDP on the shared network, and BGP to the router VM (vagrant/router/bird.conf).
kubectl apply -f "$SKEIN/examples/l2-pool.yaml" -f "$SKEIN/examples/bgp-peer.yaml"
kubectl get nodes -o wide
