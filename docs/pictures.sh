#!/bin/bash
# Makes the README's pictures from live labs (as root; everything in network
# namespaces, every lab removed at the end, on failure too):
#   docs/netns-lab.svg  the netns lab: `skein-lab demo --diagram docs/netns-lab.svg`
#   docs/kube-lab.svg   the kube lab: `skein-lab kube up`, `skein-lab kube diagram`,
#                       `skein-lab kube down` (the first run builds Kubernetes: see
#                       the README's "The kube lab")
# Usage: bash docs/pictures.sh [netns|kube]...   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
lab=.venv/bin/skein-lab
for what in "${@:-netns kube}"; do
  for one in $what; do
    case "$one" in
      netns)
        "$lab" demo --diagram docs/netns-lab.svg ;;
      kube)
        workdir=$(mktemp -d /var/tmp/skein-lab-pictures.XXXXXX)
        trap '"$lab" kube down --workdir "$workdir" || true; rm -rf "$workdir"' EXIT
        "$lab" kube up --workdir "$workdir" --no-dns
        "$lab" kube diagram --workdir "$workdir" docs/kube-lab.svg
        "$lab" kube down --workdir "$workdir"
        trap - EXIT
        rm -rf "$workdir" ;;
      *)
        echo "usage: $0 [netns|kube]..." >&2; exit 2 ;;
    esac
  done
done
