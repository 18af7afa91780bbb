"""Secrets, for one use only: the TCP MD5 password of a MetalLB BGPPeer.

MetalLB reads `spec.passwordSecret` from a Secret of type
kubernetes.io/basic-auth, key `password`.  Only that key of that type is kept:
a speaker has no business holding other secrets in memory.  The value never
appears in a message or a repr (errors name the field, never what it holds).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from foundation.kube.model.fields import Cursor
from foundation.kube.model.meta import open_object

BASIC_AUTH = "kubernetes.io/basic-auth"


@dataclass(frozen=True, slots=True)
class Secret:
    namespace: str
    name: str
    type: str = "Opaque"
    # Compared (a changed password is a changed state) but never shown.
    password: str | None = field(default=None, repr=False)


def _secret_text(cur: Cursor, encoded: bool) -> str | None:
    value = cur.value
    if value is None:
        return None
    if not isinstance(value, str):
        cur.fail("expected a string")  # the value itself is not echoed
    raw = value.encode()
    if encoded:
        try:
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            cur.fail("expected base64 text")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        cur.fail("expected UTF-8 text once decoded")


def parse_secret(doc: Any) -> Secret:
    obj, meta = open_object(doc, "Secret", namespaced=True)
    kind = obj.at("type").string("Opaque")
    if kind != BASIC_AUTH:
        return Secret(meta.namespace, meta.name, kind)
    for key in ("stringData", "data"):
        if not isinstance(obj.at(key).value, dict | None):
            obj.at(key).fail("expected a mapping")  # without echoing what it holds
    # stringData wins over data, as the API server merges them on write.
    password = _secret_text(obj.at("stringData").at("password"), encoded=False)
    if password is None:
        password = _secret_text(obj.at("data").at("password"), encoded=True)
    return Secret(meta.namespace, meta.name, kind, password)
