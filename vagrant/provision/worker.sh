#!/usr/bin/env bash
# Joins a worker to the cluster; retries while the control plane is coming up
# (providers that start the VMs in parallel).
#   worker.sh CONTROL_PLANE_IP TOKEN
set -euo pipefail
CONTROL_PLANE_IP=${1:?control-plane IP}
TOKEN=${2:?kubeadm bootstrap token}

if [[ ! -f /etc/kubernetes/kubelet.conf ]]; then
  for _ in $(seq 60); do
    if kubeadm join "${CONTROL_PLANE_IP}:6443" --token "$TOKEN" \
         --discovery-token-unsafe-skip-ca-verification --node-name "$(hostname -s)"; then
      break
    fi
    kubeadm reset --force >/dev/null 2>&1 || true
    sleep 10
  done
fi
[[ -f /etc/kubernetes/kubelet.conf ]] || { echo "could not join ${CONTROL_PLANE_IP}" >&2; exit 1; }
