"""The scripts and configurations that cannot run here (no VMs, no container
engine): shell scripts parse and are shellcheck-clean, the Vagrantfile parses,
BIRD accepts the router's configuration, and the addresses, AS numbers and pod
network agree across the Vagrantfile, bird.conf, kind, the manifests and the
examples.  Needs shellcheck, ruby and bird2 (install/host-deps.sh)."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.install.helpers import EXAMPLES, INSTALL, MANIFESTS, REPO, VAGRANT, yaml_objects

SCRIPTS = sorted([*INSTALL.glob("*.sh"), *VAGRANT.rglob("*.sh")])
VAGRANTFILE = VAGRANT / "Vagrantfile"
BIRD_CONF = VAGRANT / "router" / "bird.conf"


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed: run install/host-deps.sh"
    return found


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


def test_there_are_scripts():
    names = {p.relative_to(REPO).as_posix() for p in SCRIPTS}
    assert {"vagrant/provision/k8s-node.sh", "vagrant/provision/control-plane.sh",
            "vagrant/provision/worker.sh", "vagrant/provision/router.sh",
            "vagrant/kind/up.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_shell_script(script: Path):
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script.read_text()
    assert script.stat().st_mode & 0o111, "not executable"
    syntax = run("bash", "-n", str(script))
    assert syntax.returncode == 0, syntax.stderr
    lint = run(tool("shellcheck"), "--shell=bash", "--severity=style", str(script))
    assert lint.returncode == 0, lint.stdout


def test_shellcheck_finds_problems(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
    assert run(tool("shellcheck"), str(bad)).returncode != 0


def vagrant_constants() -> dict[str, str]:
    text = VAGRANTFILE.read_text()
    return dict(re.findall(r'^([A-Z_]+) = (?:ENV\.fetch\("\w+", )?"([^"]*)"', text, re.M))


def vagrant_node_ips() -> dict[str, str]:
    text = VAGRANTFILE.read_text()
    consts = vagrant_constants()
    out = {}
    for name, ip in re.findall(r'\{ name: "(\w+)", ip: ("[^"]+"|[A-Z_]+)', text):
        out[name] = ip.strip('"') if ip.startswith('"') else consts[ip]
    return out


def test_vagrantfile():
    check = run(tool("ruby"), "-c", str(VAGRANTFILE))
    assert check.returncode == 0 and "Syntax OK" in check.stdout, check.stderr
    text = VAGRANTFILE.read_text()
    for path in re.findall(r'path: "([^"]+)"', text):
        assert (VAGRANT / path).is_file(), path
    assert vagrant_node_ips() == {"cp": "192.168.56.10", "w1": "192.168.56.11",
                                  "w2": "192.168.56.12"}
    consts = vagrant_constants()
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", consts["TOKEN"])  # kubeadm's format
    assert consts["POD_CIDR"] == cluster_cidr()


def cluster_cidr() -> str:
    config = next(o for o in yaml_objects(MANIFESTS / "30-skein-node.yaml")
                  if o["kind"] == "ConfigMap")
    return str(config["data"]["cluster-cidr"])


def test_bird_accepts_the_router_config(tmp_path):
    bird = tool("bird")
    ok = run(bird, "-p", "-c", str(BIRD_CONF))
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "bird.conf"
    broken.write_text(BIRD_CONF.read_text().replace("neighbor range", "neighbour rnage"))
    assert run(bird, "-p", "-c", str(broken)).returncode != 0


def search(pattern: str, text: str) -> re.Match[str]:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found"
    return match


def test_router_and_nodes_agree_with_the_bgp_example():
    conf = BIRD_CONF.read_text()
    local_ip, local_as = search(r"local ([\d.]+) as (\d+);", conf).groups()
    node_range, node_as = search(r"neighbor range ([\d./]+) as (\d+);", conf).groups()
    nodes = ipaddress.IPv4Network(node_range)
    accepted = ipaddress.IPv4Network(search(r"net ~ \[ ([\d./]+)\{", conf).group(1))
    objects = yaml_objects(EXAMPLES / "bgp-peer.yaml")
    peer = next(o for o in objects if o["kind"] == "BGPPeer")["spec"]
    assert (peer["peerAddress"], peer["peerASN"], peer["myASN"]) == (
        local_ip, int(local_as), int(node_as))
    assert local_ip == vagrant_constants()["ROUTER_IP"]
    assert re.search(rf"router id {re.escape(local_ip)};", conf)
    used = [ipaddress.IPv4Address(ip) for ip in [*vagrant_node_ips().values(), local_ip]]
    assert all(ip in nodes for ip in used)
    pool = next(o for o in objects if o["kind"] == "IPAddressPool")["spec"]["addresses"]
    assert all(ipaddress.IPv4Network(a).subnet_of(accepted) for a in pool)
    # The L2 pool is on the nodes' segment and clear of every VM.
    l2 = next(o for o in yaml_objects(EXAMPLES / "l2-pool.yaml")
              if o["kind"] == "IPAddressPool")["spec"]["addresses"]
    first, last = (ipaddress.IPv4Address(a) for a in l2[0].split("-"))
    assert first in nodes and last in nodes
    assert not [ip for ip in used if first <= ip <= last]


def test_kind_config():
    config = yaml.safe_load((VAGRANT / "kind" / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["networking"] == {"disableDefaultCNI": True, "podSubnet": cluster_cidr()}
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker"]


def sed(expressions: list[str], path: Path) -> str:
    args = [a for e in expressions for a in ("-e", e)]
    proc = subprocess.run(["sed", *args, str(path)], capture_output=True, text=True, check=True)
    return proc.stdout


def test_control_plane_edits_of_the_node_manifest():
    """control-plane.sh's sed sets the ConfigMap's two keys, and nothing else."""
    script = (VAGRANT / "provision" / "control-plane.sh").read_text()
    edits = ['s|^  cluster-cidr: .*|  cluster-cidr: ${POD_CIDR}|',
             's|^  underlay-device: .*|  underlay-device: ${underlay}|']
    for edit in edits:
        assert f'"{edit}"' in script
    concrete = [e.replace("${POD_CIDR}", "10.245.0.0/16").replace("${underlay}", "eth1")
                for e in edits]
    original = (MANIFESTS / "30-skein-node.yaml").read_text()
    edited = sed(concrete, MANIFESTS / "30-skein-node.yaml")
    changed = [(a, b) for a, b in zip(original.splitlines(), edited.splitlines(), strict=True)
               if a != b]
    assert len(changed) == 2, changed
    objects = [o for o in yaml.safe_load_all(edited) if o]
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    assert config["data"] == {"cluster-cidr": "10.245.0.0/16", "underlay-device": "eth1"}
    for obj in objects:
        kubernetes_validate.validate(obj, "1.31", strict=True)


def test_kind_edit_of_the_l2_example():
    script = (VAGRANT / "kind" / "up.sh").read_text()
    edit = r's|^  - 192\.168\.56\..*|  - ${pool}|'
    assert f'"{edit}"' in script
    edited = sed([edit.replace("${pool}", "172.18.255.200-172.18.255.250")],
                 EXAMPLES / "l2-pool.yaml")
    pool = next(o for o in yaml.safe_load_all(edited) if o and o["kind"] == "IPAddressPool")
    assert pool["spec"]["addresses"] == ["172.18.255.200-172.18.255.250"]
