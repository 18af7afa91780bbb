"""Certificates and kubeconfigs for the kube lab, made with the openssl command.

One CA signs everything: the API server's serving certificate, a client
certificate per component (the identity Kubernetes' RBAC and Node authorizer
expect: `system:node:NAME` in `system:nodes` for each kubelet, `system:kube-proxy`,
`system:kube-controller-manager`, `system:kube-scheduler`, an admin in
`system:masters`), and the service-account key pair.  Everything lives in the
lab's work directory and goes with it.
"""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from foundation.files import write_atomically


class PkiError(RuntimeError):
    pass


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {proc.stderr.strip().splitlines()[-1:]}")


@dataclass(frozen=True)
class Credential:
    cert: Path
    key: Path


class Pki:
    """A CA in `directory` and the certificates issued from it."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = Credential(directory / "ca.crt", directory / "ca.key")
        self.sa_key = directory / "sa.key"
        self.sa_pub = directory / "sa.pub"

    def create(self) -> Pki:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.ca.cert.exists():
            _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                     "-keyout", str(self.ca.key), "-out", str(self.ca.cert),
                     "-subj", "/CN=skein-lab-ca", cwd=self.dir)
        if not self.sa_key.exists():
            _openssl("genrsa", "-out", str(self.sa_key), "2048", cwd=self.dir)
            _openssl("rsa", "-in", str(self.sa_key), "-pubout", "-out", str(self.sa_pub),
                     cwd=self.dir)
        return self

    def issue(self, name: str, common_name: str, organization: str | None = None,
              sans: tuple[str, ...] = (), server: bool = False) -> Credential:
        """A key and certificate `name`.crt/.key signed by the CA (kept if present)."""
        cred = Credential(self.dir / f"{name}.crt", self.dir / f"{name}.key")
        if cred.cert.exists():
            return cred
        subject = f"/CN={common_name}" + (f"/O={organization}" if organization else "")
        csr = self.dir / f"{name}.csr"
        ext = self.dir / f"{name}.ext"
        usage = "serverAuth" if server else "clientAuth"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                 f"extendedKeyUsage={usage}"]
        if sans:
            lines.append("subjectAltName=" + ",".join(
                (f"IP:{s}" if s[0].isdigit() or ":" in s else f"DNS:{s}") for s in sans))
        ext.write_text("\n".join(lines) + "\n", encoding="utf-8")
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(cred.key),
                 "-out", str(csr), "-subj", subject, cwd=self.dir)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca.cert), "-CAkey",
                 str(self.ca.key), "-CAcreateserial", "-days", "30", "-out", str(cred.cert),
                 "-extfile", str(ext), cwd=self.dir)
        csr.unlink()
        ext.unlink()
        return cred


def kubeconfig(path: Path, server: str, ca: Path, cred: Credential, user: str) -> Path:
    """A kubeconfig with the certificates embedded (so it works from any mount
    namespace, e.g. inside a pod that only sees this one file)."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "skein-lab",
        "clusters": [{"name": "skein-lab", "cluster": {
            "server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cred.cert),
                                          "client-key-data": b64(cred.key)}}],
        "contexts": [{"name": "skein-lab", "context": {"cluster": "skein-lab", "user": user}}],
    }
    write_atomically(path, yaml.safe_dump(doc, sort_keys=False), mode=0o600)
    return path
