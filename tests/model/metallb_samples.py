"""MetalLB's own configuration as test data (../shared/metallb/), and what
MetalLB's CRDs make of it.

`samples()` is every document of its configsamples and website examples, read
as the API server reads YAML (`foundation.kube.sources.yaml_documents`: no
base-60 numbers, so `value: 1234:1` stays a string).  `refusal(doc, schemas)` is
what an API server holding those CRDs says to `kubectl apply` of the document:
the structural-schema checks (types, bounds, enums, required fields, unknown
fields, which `kubectl apply` refuses by default) plus the CEL rules MetalLB's
CRDs carry, written out here because there is no CEL evaluator in the venv.
An unknown rule fails loudly so that a new rule in MetalLB's CRDs is noticed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from foundation.kube.model import parse_go_duration
from foundation.kube.sources import yaml_documents

REPO = Path(__file__).resolve().parents[2]


def _shared() -> Path:
    """../shared/metallb beside the checkout; a clone elsewhere names it with
    SKEIN_METALLB_DATA or finds the project's copy at /work/shared.  Missing, the
    tests fail here rather than pass over an empty directory."""
    import os

    for candidate in (os.environ.get("SKEIN_METALLB_DATA"), REPO.parent / "shared" / "metallb",
                      "/work/shared/metallb"):
        if candidate and (Path(candidate) / "crds").is_dir():
            return Path(candidate)
    raise FileNotFoundError("MetalLB's samples and CRDs (../shared/metallb) not found: "
                            "set SKEIN_METALLB_DATA to their directory")


SHARED = _shared()
METALLB_CRDS = SHARED / "crds"
OUR_CRDS = REPO / "install" / "manifests" / "10-crds.yaml"

# Kinds MetalLB's speaker and controller write, never a user: the model leaves them.
STATUS_KINDS = {"ConfigurationState", "ServiceL2Status", "ServiceBGPStatus"}

Schemas = dict[tuple[str, str], dict[str, Any]]


@dataclass(frozen=True)
class Sample:
    path: Path
    line: int
    doc: Any

    def __str__(self) -> str:
        where = f"{self.path.relative_to(SHARED)}:{self.line}"
        if isinstance(self.doc, dict):
            meta = self.doc.get("metadata") or {}
            return f"{where} {self.doc.get('kind')} {meta.get('name')}"
        return where


def samples() -> list[Sample]:
    out = []
    for path in sorted([*SHARED.glob("configsamples/*.yaml"),
                        *SHARED.glob("docs-examples/*.yaml")]):
        for line, doc in yaml_documents(path.read_text(encoding="utf-8")):
            if doc is not None:
                out.append(Sample(path, line, doc))
    return out


def metallb_io(sample: Sample) -> bool:
    return (isinstance(sample.doc, dict)
            and str(sample.doc.get("apiVersion", "")).startswith("metallb.io/"))


def crd_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8"))
            if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"]


def metallb_crds() -> list[dict[str, Any]]:
    return [c for p in sorted(METALLB_CRDS.glob("*.yaml")) for c in crd_documents(p)]


def our_crds() -> list[dict[str, Any]]:
    return crd_documents(OUR_CRDS)


def schemas_of(crds: list[dict[str, Any]]) -> Schemas:
    """(kind, version) -> openAPIV3Schema, for served versions."""
    return {(c["spec"]["names"]["kind"], v["name"]): v["schema"]["openAPIV3Schema"]
            for c in crds for v in c["spec"]["versions"] if v["served"]}


# -- what an API server with these CRDs refuses -----------------------------------

def _type_ok(value: Any, type_: str) -> bool:
    if type_ == "object":
        return isinstance(value, dict)
    if type_ == "array":
        return isinstance(value, list)
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "boolean":
        return isinstance(value, bool)
    if type_ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    raise AssertionError(f"unknown schema type {type_!r}")


def _seconds(text: str) -> float:
    return parse_go_duration(text)


def _cel(rule: str, value: Any, path: str) -> bool:
    """MetalLB's CEL rules, by their exact text; True when the value passes."""
    if rule == "self == oldSelf":
        return True  # an update rule: a create always passes
    if rule == ("duration(self).getSeconds() >= 1 && duration(self).getSeconds() <= 65535"):
        return 1 <= int(_seconds(value)) <= 65535
    if rule == "duration(self).getMilliseconds() % 1000 == 0":
        return round(_seconds(value) * 1000) % 1000 == 0
    if rule == ("!has(self.serviceSelectors) || self.serviceSelectors.size() == 0 || "
                "((!has(self.aggregationLength) || self.aggregationLength == 32) && "
                "(!has(self.aggregationLengthV6) || self.aggregationLengthV6 == 128))"):
        return (not value.get("serviceSelectors")
                or (value.get("aggregationLength", 32) == 32
                    and value.get("aggregationLengthV6", 128) == 128))
    raise AssertionError(f"{path}: a CEL rule this oracle does not know: {rule!r}")


def schema_errors(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Every reason a structural schema refuses `value` (unknown fields included)."""
    where = path or "<root>"
    type_ = schema.get("type")
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: null is not allowed"]
    if type_ and not _type_ok(value, type_):
        return [f"{where}: expected {type_}, got {type(value).__name__} {value!r}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: {value} is above the maximum {schema['maximum']}")
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{where}: longer than {schema['maxLength']}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{where}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: does not match {schema['pattern']}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{path}[{i}]")
    if isinstance(value, dict) and path != ".metadata":
        props = schema.get("properties")
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}.{key}: required")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if props is not None and key in props:
                errors += schema_errors(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, f"{path}.{key}")
            elif props is not None or extra is False or not schema.get(
                    "x-kubernetes-preserve-unknown-fields"):
                if type_ == "object" and (props is not None or extra is None):
                    errors.append(f"{path}.{key}: unknown field")
    if not errors:
        for rule in schema.get("x-kubernetes-validations", []):
            if not _cel(rule["rule"], value, where):
                errors.append(f"{where}: {rule.get('message', rule['rule'])}")
    return errors


def refusal(doc: Any, schemas: Schemas) -> str | None:
    """Why an API server with these CRDs refuses `kubectl apply` of `doc`, or
    None when it accepts it.  `status` is left out as the API server does on a
    create through the main resource (every MetalLB kind has the status
    subresource)."""
    kind, api_version = doc.get("kind"), str(doc.get("apiVersion", ""))
    schema = schemas.get((kind, api_version.rpartition("/")[2]))
    if schema is None:
        return f"no CRD serves {kind} {api_version}"
    body = {k: v for k, v in doc.items() if k != "status"}
    errors = schema_errors(body, schema)
    return "; ".join(errors) if errors else None
