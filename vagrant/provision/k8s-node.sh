#!/usr/bin/env bash
# Makes a Debian 12 VM a Kubernetes node: containerd, kubeadm, kubelet and
# kubectl from the Kubernetes package repository, and what a Skein node needs
# (python3 >= 3.11 runs the skein and skein-ipam executables from /opt/cni/bin;
# nftables for ipMasq; the vxlan module).  Safe to run again.
#   k8s-node.sh NODE_IP K8S_MINOR     e.g. k8s-node.sh 192.168.56.11 1.31
set -euo pipefail
NODE_IP=${1:?node IP}
K8S_MINOR=${2:?Kubernetes minor version, e.g. 1.31}
export DEBIAN_FRONTEND=noninteractive

swapoff -a
sed -i '/\sswap\s/s/^[^#]/#&/' /etc/fstab

cat > /etc/modules-load.d/skein-k8s.conf <<'MODULES'
overlay
br_netfilter
vxlan
MODULES
for module in overlay br_netfilter vxlan; do modprobe "$module"; done
cat > /etc/sysctl.d/90-skein-k8s.conf <<'SYSCTL'
net.ipv4.ip_forward = 1
net.ipv6.conf.all.forwarding = 1
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
SYSCTL
sysctl --system >/dev/null

apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  ca-certificates curl gpg containerd python3 nftables iproute2 conntrack >/dev/null
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "python3 >= 3.11 is required by Skein's CNI executables" >&2; exit 1; }

# containerd with the systemd cgroup driver, as kubeadm configures the kubelet.
mkdir -p /etc/containerd
containerd config default > /etc/containerd/config.toml
sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' /etc/containerd/config.toml
systemctl restart containerd
systemctl enable containerd

keyring=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
repo="https://pkgs.k8s.io/core:/stable:/v${K8S_MINOR}/deb/"
mkdir -p /etc/apt/keyrings
curl -fsSL "${repo}Release.key" | gpg --batch --yes --dearmor -o "$keyring"
echo "deb [signed-by=${keyring}] ${repo} /" > /etc/apt/sources.list.d/kubernetes.list
apt-get update -qq
# kubernetes-cni puts the reference plugins (loopback, which containerd runs for
# every pod's lo) into /opt/cni/bin, where Skein's installer adds its own.
apt-get install -y -qq --no-install-recommends kubelet kubeadm kubectl kubernetes-cni >/dev/null
apt-mark hold kubelet kubeadm kubectl >/dev/null

# The kubelet's address is the shared network's, not the provider's NAT.
echo "KUBELET_EXTRA_ARGS=--node-ip=${NODE_IP}" > /etc/default/kubelet
systemctl enable kubelet
systemctl restart kubelet

image=/skein/vagrant/skein-image.tar
if [[ -f $image ]]; then
  ctr --namespace k8s.io images import "$image"
else
  echo "note: $image not found: the nodes will pull Skein's image from its registry" >&2
fi
