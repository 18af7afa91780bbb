#!/usr/bin/env bash
# Creates the kind cluster of kind-config.yaml and installs Skein into it: builds
# the image (unless SKIP_BUILD=1), loads it into the nodes, applies
# install/manifests (the DaemonSet installs the CNI executables with the Python
# runtime they run on: kind's node image has no python3 and needs none), and
# adds an L2 pool from the end of the
# "kind" container network.  Safe to run again.
#   vagrant/kind/up.sh            # ENGINE=podman for podman (kind's podman provider)
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-skein}
ENGINE=${ENGINE:-docker}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
IMAGE=${IMAGE:-ghcr.io/skein-net/skein:${VERSION}}
CONTEXT=kind-${CLUSTER}
if [[ $ENGINE == podman ]]; then
  export KIND_EXPERIMENTAL_PROVIDER=podman
fi

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  "$ENGINE" build -f install/Containerfile -t "$IMAGE" .
fi

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config vagrant/kind/kind-config.yaml
fi

archive=$(mktemp --suffix=.tar)
trap 'rm -f "$archive"' EXIT
"$ENGINE" save -o "$archive" "$IMAGE"
kind load image-archive "$archive" --name "$CLUSTER"

kubectl --context "$CONTEXT" apply -f install/manifests/
kubectl --context "$CONTEXT" wait --for condition=established --timeout=120s \
  crd -l app.kubernetes.io/part-of=skein
kubectl --context "$CONTEXT" -n skein-system rollout status daemonset/skein-node --timeout=10m
kubectl --context "$CONTEXT" wait --for condition=Ready --timeout=5m node --all

# An L2 pool of the last addresses of the kind network's IPv4 subnet.
if [[ $ENGINE == podman ]]; then
  template='{{range .Subnets}}{{.Subnet}} {{end}}'
else
  template='{{range .IPAM.Config}}{{.Subnet}} {{end}}'
fi
subnet=$("$ENGINE" network inspect kind --format "$template" | tr ' ' '\n' | grep -m1 '\.')
pool=$(python3 -c '
import ipaddress, sys
net = ipaddress.ip_network(sys.argv[1])
print(f"{net.broadcast_address - 55}-{net.broadcast_address - 5}")' "$subnet")
sed "s|^  - 192\.168\.56\..*|  - ${pool}|" install/examples/l2-pool.yaml \
  | kubectl --context "$CONTEXT" apply -f -
echo "Skein is installed in kind cluster ${CLUSTER}; LoadBalancer pool ${pool}"
