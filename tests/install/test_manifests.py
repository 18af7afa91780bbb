"""install/manifests and install/examples: valid against the Kubernetes schemas
(kubernetes-validate, offline, strict: unknown fields are errors), the CRDs'
schemas structural, the examples valid against those schemas and accepted by
Skein's own model, and the privileges exactly the ones each component needs."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from foundation.kube.model import parse_object
from tests.install.helpers import EXAMPLES, MANIFESTS, REPO, load_script, yaml_objects

# The release kubeadm installs in vagrant/, and the newest the library knows.
K8S_VERSIONS = ["1.31", kubernetes_validate.latest_version()]
NAMESPACE = "skein-system"
CONFIG_NAMESPACE = "metallb-system"  # where MetalLB, and Skein's daemons, read pools etc.

gen_crds = load_script("gen_crds")


def manifests() -> list[dict[str, Any]]:
    return [obj for path in sorted(MANIFESTS.glob("*.yaml")) for obj in yaml_objects(path)]


def examples() -> list[dict[str, Any]]:
    return [obj for path in sorted(EXAMPLES.glob("*.yaml")) for obj in yaml_objects(path)]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in manifests() if o["kind"] == kind}


def crd_schema(kind: str, version: str) -> dict[str, Any]:
    for crd in by_kind("CustomResourceDefinition").values():
        if crd["spec"]["names"]["kind"] == kind:
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    return dict(v["schema"]["openAPIV3Schema"])
    raise AssertionError(f"no CRD for {kind} {version}")


def validate_against_crd(obj: dict[str, Any]) -> None:
    jsonschema.validate(obj, crd_schema(obj["kind"], obj["apiVersion"].split("/")[1]))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(version):
    objects = manifests()
    assert len(objects) > 15
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_validator_catches_mistakes():
    """The check above can fail: a typo'd field and a wrong type are errors."""
    ds = copy.deepcopy(by_kind("DaemonSet")["skein-node"])
    ds["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[0], strict=True)
    crd = copy.deepcopy(by_kind("CustomResourceDefinition")["bgppeers.metallb.io"])
    crd["spec"]["versions"][0]["served"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(crd, K8S_VERSIONS[0], strict=True)


def test_crd_manifest_is_generated():
    assert gen_crds.main(["--check"]) == 0
    assert (MANIFESTS / "10-crds.yaml").read_text() == gen_crds.render()


def test_crds_cover_metallbs_kinds():
    crds = by_kind("CustomResourceDefinition")
    served = {(c["spec"]["names"]["kind"], v["name"]) for c in crds.values()
              for v in c["spec"]["versions"] if v["served"]}
    assert served == {("IPAddressPool", "v1beta1"), ("L2Advertisement", "v1beta1"),
                      ("BGPAdvertisement", "v1beta1"), ("BGPPeer", "v1beta1"),
                      ("BGPPeer", "v1beta2"), ("Community", "v1beta1"),
                      ("BFDProfile", "v1beta1"), ("ConfigurationState", "v1beta1"),
                      ("ServiceL2Status", "v1beta1"), ("ServiceBGPStatus", "v1beta1")}
    for name, crd in crds.items():
        spec = crd["spec"]
        assert name == f"{spec['names']['plural']}.metallb.io" and spec["group"] == "metallb.io"
        assert spec["scope"] == "Namespaced"
        assert sum(v["storage"] for v in spec["versions"]) == 1, name


def structural_problems(schema: dict[str, Any], path: str = "") -> list[str]:
    """Violations of apiextensions.k8s.io/v1's structural-schema rules."""
    problems = []
    typed = schema.get("type") or schema.get("x-kubernetes-int-or-string")
    if not typed:
        problems.append(f"{path or '/'}: no type")
    if "properties" in schema and schema.get("type") != "object":
        problems.append(f"{path}: properties on a non-object")
    if "items" in schema and schema.get("type") != "array":
        problems.append(f"{path}: items on a non-array")
    if schema.get("type") == "array" and "items" not in schema:
        problems.append(f"{path}: array without items")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{path}: both properties and additionalProperties")
    for forbidden in ("$ref", "definitions", "dependencies", "patternProperties", "id"):
        if forbidden in schema:
            problems.append(f"{path}: {forbidden} is not allowed")
    for required in schema.get("required", []):
        if required not in schema.get("properties", {}):
            problems.append(f"{path}: required {required} is not a property")
    for key, sub in schema.get("properties", {}).items():
        problems.extend(structural_problems(sub, f"{path}/{key}"))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            problems.extend(structural_problems(schema[key], f"{path}/{key}"))
    return problems


def test_crd_schemas_are_structural():
    for crd in by_kind("CustomResourceDefinition").values():
        for v in crd["spec"]["versions"]:
            schema = v["schema"]["openAPIV3Schema"]
            assert structural_problems(schema) == [], (crd["metadata"]["name"], v["name"])
            # metadata may only be an untyped-beyond-object stub at the root.
            assert schema["properties"]["metadata"] == {"type": "object"}
            jsonschema.Draft4Validator.check_schema(schema)
    assert structural_problems({"type": "object", "properties": {"a": {}}}) == ["/a: no type"]


def test_examples_validate_against_the_crds_and_parse():
    objects = examples()
    assert {o["kind"] for o in objects} == {"IPAddressPool", "L2Advertisement", "BGPPeer",
                                           "BGPAdvertisement", "Community"}
    for obj in objects:
        assert obj["metadata"]["namespace"] == CONFIG_NAMESPACE
        validate_against_crd(obj)
        parse_object(obj)  # Skein's model accepts them too (raises ModelError otherwise)


def test_crd_schemas_catch_mistakes():
    pool = next(o for o in examples() if o["kind"] == "IPAddressPool")
    broken: dict[str, Any]
    # (No minItems on addresses, as MetalLB's CRD: the model refuses an empty list.)
    for broken in ({"autoAssign": True},
                   {"addresses": ["192.0.2.0/28"], "autoAssign": "yes"}):
        with pytest.raises(jsonschema.ValidationError):
            validate_against_crd({**pool, "spec": broken})
    peer = next(o for o in examples() if o["kind"] == "BGPPeer")
    with pytest.raises(jsonschema.ValidationError):
        validate_against_crd({**peer, "spec": {**peer["spec"], "peerPort": 70000}})
    with pytest.raises(jsonschema.ValidationError):
        validate_against_crd({**peer, "spec": {**peer["spec"], "dynamicASN": "sideways"}})
    # v1beta1 BGPPeer has no dynamicASN, so it needs peerASN.
    old = {**peer, "apiVersion": "metallb.io/v1beta1",
           "spec": {k: v for k, v in peer["spec"].items() if k != "peerASN"}}
    with pytest.raises(jsonschema.ValidationError):
        validate_against_crd(old)


def test_model_test_data_fits_the_crds():
    """A MetalLB user's objects (the model tests' sample file) fit these CRDs."""
    data = REPO / "tests/model/data/metallb.yaml"
    for obj in yaml_objects(data):
        validate_against_crd(obj)


def rules(kind: str, name: str) -> set[tuple[str, str, str]]:
    role = by_kind(kind)[name]
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def grant(group: str, resources: list[str], verbs: list[str]) -> set[tuple[str, str, str]]:
    return {(group, r, v) for r in resources for v in verbs}


METALLB = ["ipaddresspools", "l2advertisements", "bgppeers", "bgpadvertisements", "communities"]
WATCH = ["list", "watch"]


def test_rbac_is_least_privilege():
    """What the daemons read and write (foundation.kube.sources.kube, the controller's
    writer) and install-cni's GET of its Node; nothing more."""
    assert rules("ClusterRole", "skein-agent") == grant("", ["nodes"], ["get", *WATCH])
    assert rules("ClusterRole", "skein-speaker") == (
        grant("", ["nodes", "services"], WATCH)
        | grant("discovery.k8s.io", ["endpointslices"], WATCH)
        | grant("projectcalico.org", ["bgpconfigurations"], WATCH)
        | grant("crd.projectcalico.org", ["bgpconfigurations"], WATCH)
        | grant("", ["events"], ["create"]))  # nodeAssigned (speaker.kube_status)
    assert rules("Role", "skein-speaker") == grant("metallb.io", METALLB, WATCH)
    # Its liveness: its own Lease written, everyone's read (speaker.membership.lease).
    assert rules("Role", "skein-speaker-leases") == grant(
        "coordination.k8s.io", ["leases"], ["get", *WATCH, "create", "update", "delete"])
    # MetalLB's status objects (speaker.kube_status): listed and watched, its own
    # created with their status and deleted; never read one by one, never updated whole.
    statuses = ["servicel2statuses", "servicebgpstatuses"]
    assert rules("Role", "skein-speaker-status") == (
        grant("metallb.io", statuses, [*WATCH, "create", "delete"])
        | grant("metallb.io", [f"{p}/status" for p in statuses], ["patch"]))
    # BGPPeer passwordSecret: Secrets read in skein-system only, by the speaker only.
    assert rules("Role", "skein-speaker-secrets") == grant("", ["secrets"], ["get", *WATCH])
    assert rules("ClusterRole", "skein-controller") == (
        grant("", ["services", "namespaces"], WATCH)
        | grant("", ["services/status", "services"], ["patch"])
        | grant("", ["events"], ["create"]))
    assert rules("Role", "skein-controller") == grant("metallb.io", ["ipaddresspools"], WATCH)
    in_skein_system = {"skein-speaker-leases", "skein-speaker-status"}
    for obj in manifests():
        for rule in obj.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert "pods" not in rule["resources"]
            if "secrets" in rule["resources"]:
                assert (obj["kind"], obj["metadata"]["name"]) == ("Role",
                                                                  "skein-speaker-secrets")
    for kind in ("Role", "RoleBinding"):
        for name, role in by_kind(kind).items():
            assert role["metadata"]["namespace"] == (
                NAMESPACE if name in in_skein_system else CONFIG_NAMESPACE)


def test_rbac_covers_what_the_kube_source_reads():
    """Every kind a daemon's KubeSource lists is granted list and watch to it."""
    from foundation.kube.sources import kube

    granted = {"skein-agent": rules("ClusterRole", "skein-agent"),
               "skein-speaker": rules("ClusterRole", "skein-speaker")
               | rules("Role", "skein-speaker") | rules("Role", "skein-speaker-secrets"),
               "skein-controller": rules("ClusterRole", "skein-controller")
               | rules("Role", "skein-controller")}
    for account, kinds in (("skein-agent", kube.AGENT_KINDS),
                           ("skein-speaker", kube.SPEAKER_KINDS),
                           ("skein-controller", kube.CONTROLLER_KINDS)):
        for group, kind in kinds:
            plural = kube.PLURALS[(group, kind)]
            assert grant(group, [plural], WATCH) <= granted[account], (account, kind)


def test_bindings_match_roles_and_accounts():
    accounts = set(by_kind("ServiceAccount"))
    assert accounts == {"skein-agent", "skein-speaker", "skein-controller"}
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for name, binding in by_kind(kind).items():
            role_kind = binding["roleRef"]["kind"]
            role = by_kind(role_kind)[binding["roleRef"]["name"]]
            assert role["metadata"].get("namespace") == binding["metadata"].get("namespace")
            # skein-speaker-leases, -status, -secrets: the speaker's
            account = name.removesuffix("-leases").removesuffix("-status").removesuffix(
                "-secrets")
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                            "namespace": NAMESPACE}]
    workloads = {**by_kind("DaemonSet"), **by_kind("Deployment")}
    used = {w["spec"]["template"]["spec"]["serviceAccountName"] for w in workloads.values()}
    assert used == accounts


def pod(kind: str, name: str) -> dict[str, Any]:
    return dict(by_kind(kind)[name]["spec"]["template"]["spec"])


def capabilities(container: dict[str, Any]) -> tuple[list[str], list[str]]:
    caps = container["securityContext"]["capabilities"]
    return caps.get("drop", []), caps.get("add", [])


def env_sources(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("valueFrom") for e in container.get("env", [])}


def test_node_daemonset():
    spec = pod("DaemonSet", "skein-node")
    assert spec["hostNetwork"] is True
    assert {"operator": "Exists"} in spec["tolerations"]
    forwarding, init = spec["initContainers"]
    (agent,) = spec["containers"]
    # Only the container that writes /proc/sys is privileged, and it runs one command.
    assert forwarding["securityContext"] == {"privileged": True}
    assert "ip_forward" in forwarding["command"][-1]
    assert capabilities(init) == (["ALL"], [])
    # The fast path: veths (NET_ADMIN), setns into the pod's netns (SYS_ADMIN), nft.
    assert capabilities(agent) == (["ALL"], ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"])
    agent_mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    assert agent_mounts["/run/netns"]["mountPropagation"] == "HostToContainer"
    assert {"/run/skein", "/var/lib/cni", "/etc/cni/net.d"} <= set(agent_mounts)
    for container in (init, agent):
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert "privileged" not in container["securityContext"]
        assert env_sources(container)["NODE_NAME"] == {"fieldRef": {"fieldPath":
                                                                    "spec.nodeName"}}
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in init["volumeMounts"]}
    # install_cni.py --root=/host writes ROOT/opt/cni/bin and ROOT/etc/cni/net.d; the
    # shebangs name the node's own paths (--bin-dir), which these hostPaths are.
    assert "--root=/host" in init["command"]
    assert mounts == {"/host/opt/cni/bin": "/opt/cni/bin", "/host/etc/cni/net.d": "/etc/cni/net.d"}
    assert "--bin-dir=/opt/cni/bin" in init["command"]
    assert "--conf-dir=/etc/cni/net.d" in init["command"]
    assert init["command"][:2] == ["python3", "/usr/local/lib/skein/install_cni.py"]
    assert "--node=$(NODE_NAME)" in init["command"]
    assert agent["command"][0] == "skein-agent" and "--node=$(NODE_NAME)" in agent["command"]
    # Both read the same settings from the ConfigMap.
    config = by_kind("ConfigMap")["skein-config"]["data"]
    for flag, key in (("--cluster-cidr", "cluster-cidr"), ("--underlay-device", "underlay-device")):
        env = flag[2:].upper().replace("-", "_")
        for container in (init, agent):
            assert f"{flag}=$({env})" in container["command"]
            assert env_sources(container)[env] == {"configMapKeyRef": {"name": "skein-config",
                                                                       "key": key}}
        assert key in config
    assert agent["readinessProbe"]["exec"]["command"] == ["ip", "link", "show", "skein.1"]


def test_speaker_and_controller():
    speaker = pod("DaemonSet", "skein-speaker")
    assert speaker["hostNetwork"] is True
    (container,) = speaker["containers"]
    assert capabilities(container) == (["ALL"], ["NET_ADMIN", "NET_RAW"])
    # In-cluster is the default source: no flag names it.
    # Heartbeats with the Leases behind them (speaker.membership.combined), MetalLB's port
    # for the metrics.
    assert container["command"] == ["skein-speaker", "--node=$(NODE_NAME)",
                                    "--liveness=heartbeat+lease", "--metrics-address=:7472",
                                    "--api-socket=/run/skein/speaker.sock"]
    assert env_sources(container)["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    # --namespace of the speakers' Leases and status objects defaults to it; the status
    # objects are owned by the speaker's Pod.
    for name, path in (("POD_NAMESPACE", "metadata.namespace"), ("POD_NAME", "metadata.name"),
                       ("POD_UID", "metadata.uid")):
        assert env_sources(container)[name] == {"fieldRef": {"fieldPath": path}}
    assert container["ports"] == [
        {"name": "metrics", "containerPort": 7472, "protocol": "TCP"},
        {"name": "heartbeats", "containerPort": 7946, "protocol": "UDP"}]

    deployment = by_kind("Deployment")["skein-controller"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    controller = pod("Deployment", "skein-controller")
    assert "hostNetwork" not in controller and controller["securityContext"]["runAsNonRoot"]
    (container,) = controller["containers"]
    assert capabilities(container) == (["ALL"], [])
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 7472, "protocol": "TCP"}]
    assert "--metrics-address=:7472" in container["command"]


def expand(argv: list[str], container: dict[str, Any]) -> list[str]:
    """$(VAR) as the kubelet expands it, with sample values for the env."""
    values = {"NODE_NAME": "worker-1", "CLUSTER_CIDR": "10.244.0.0/16", "UNDERLAY_DEVICE": "",
              "POD_NAMESPACE": NAMESPACE, "POD_NAME": "skein-speaker-x", "POD_UID": "u-1"}
    assert set(env_sources(container)) <= set(values)
    for name, value in values.items():
        argv = [a.replace(f"$({name})", value) for a in argv]
    return argv


def test_commands_parse_with_the_daemons_own_parsers():
    """Each container's arguments are accepted by the program it runs, and the
    three daemons follow the Kubernetes API in-cluster (no source flag)."""
    from cni_plugin.agent.main import command as agent_command
    from foundation.kube.cli import parse
    from speaker.controller.main import command as controller_command
    from speaker.main import command as speaker_command

    node = pod("DaemonSet", "skein-node")
    _, init = node["initContainers"]
    installer = load_script("install_cni").build_parser().parse_args(
        expand(init["command"][2:], init))
    assert (installer.node, installer.root, installer.underlay_device) == (
        "worker-1", Path("/host"), "")
    (agent_container,) = node["containers"]
    agent = parse(agent_command, expand(agent_container["command"][1:], agent_container))
    assert (agent.node, agent.cluster_cidr) == ("worker-1", ("10.244.0.0/16",))
    (speaker_container,) = pod("DaemonSet", "skein-speaker")["containers"]
    speaker = parse(speaker_command, expand(speaker_container["command"][1:],
                                            speaker_container))
    assert (speaker.node, speaker.api_socket) == ("worker-1", "/run/skein/speaker.sock")
    assert (speaker.liveness, speaker.metrics_address) == ("heartbeat+lease", ":7472")
    (controller_container,) = pod("Deployment", "skein-controller")["containers"]
    controller = parse(controller_command, controller_container["command"][1:])
    assert controller.metallb_namespace == CONFIG_NAMESPACE
    for args in (agent, speaker, controller):
        assert (args.manifests, args.kubeconfig, args.context) == (None, None, None)
        assert (args.log_level, args.log_format) == ("info", "text")


def test_everything_in_one_namespace_with_one_image():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    images = set()
    for obj in manifests():
        if obj["kind"] in ("DaemonSet", "Deployment", "ServiceAccount", "ConfigMap"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
        if obj["kind"] in ("DaemonSet", "Deployment"):
            spec = obj["spec"]["template"]["spec"]
            images |= {c["image"] for c in spec.get("initContainers", []) + spec["containers"]}
    assert images == {f"ghcr.io/skein-net/skein:{version}"}
    namespaces = by_kind("Namespace")
    assert set(namespaces) == {NAMESPACE, CONFIG_NAMESPACE}
    assert namespaces[NAMESPACE]["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"] == "privileged"


def test_files_are_yaml_with_kind_and_api_version():
    for path in [*MANIFESTS.glob("*.yaml"), *EXAMPLES.glob("*.yaml")]:
        for obj in yaml_objects(Path(path)):
            assert {"apiVersion", "kind", "metadata"} <= set(obj), path
