"""MetalLB's own samples and documentation examples (../shared/metallb/) applied
to a real API server holding Skein's CRDs (`kubectl apply --dry-run=server`,
which validates and defaults but stores nothing): every refusal is listed with
its reason, and only objects MetalLB's own CRDs refuse may be refused.  What the
server would store is then read by Skein's model, defaults included."""

from __future__ import annotations

import json

from foundation.kube.model import ModelError, parse_object
from lab.kube.cluster import MANIFESTS, KubeLab
from tests.model.metallb_samples import (
    OUR_CRDS,
    crd_documents,
    metallb_crds,
    metallb_io,
    refusal,
    samples,
    schemas_of,
)


def test_metallb_samples_apply_to_our_crds(kube: KubeLab) -> None:
    assert OUR_CRDS.parent == MANIFESTS
    kube.kubectl("apply", "-f", str(OUR_CRDS))
    names = [c["metadata"]["name"] for c in crd_documents(OUR_CRDS)]
    kube.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                 *(f"crd/{n}" for n in names))
    kube.kubectl("create", "namespace", "metallb-system", check=False)  # the lab may have it
    metallb = schemas_of(metallb_crds())
    report, wrong, stored = [], [], 0
    for sample in samples():
        proc = kube.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-",
                            input=json.dumps(sample.doc), check=False)
        # MetalLB's verdict matters for its own group; other kinds must simply apply.
        expected = (refusal(sample.doc, metallb)
                    if "metallb.io/" in str(sample.doc.get("apiVersion")) else None)
        if proc.returncode != 0:
            line = f"{sample}: refused: {proc.stderr.strip()}"
            report.append(line + (f" (MetalLB's CRDs: {expected})" if expected else ""))
            if expected is None:
                wrong.append(line)
            continue
        if metallb_io(sample):
            stored += 1
            try:
                parse_object(json.loads(proc.stdout))  # as the server would store it
            except ModelError as exc:
                wrong.append(f"{sample}: the model refuses the stored object: {exc}")
    print("\n".join(report))
    assert wrong == []
    assert stored >= 79
    # The one document refused is frr-k8s' FRRConfiguration: not a MetalLB CRD.
    assert [r.split(": ")[0].split(" ")[1] for r in report] == ["FRRConfiguration"]
