"""The one error type of the model: a bad field of a named object.

Every daemon reads objects written by hand (the lab's manifests file) or by
other controllers, so the message has to say exactly which object and which
field is wrong, in the same spelling the user wrote it:
`Service default/web: spec.ports[0].port: expected an integer 1-65535, got "http"`.
"""

from __future__ import annotations

from dataclasses import dataclass

# Control characters, and the Unicode line breaks, as escapes.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, 0x85)} | {
    0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def printable(text: str) -> str:
    """`text` with control characters escaped, so that a message stays one line
    whatever names and keys a document holds."""
    return text.translate(_CONTROL)


@dataclass(frozen=True, order=True, slots=True)
class ObjectRef:
    """Kind plus name (and namespace for namespaced kinds); the identity of an object."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return printable(f"{self.kind} {where}")


class ModelError(ValueError):
    """A Kubernetes object that cannot be used, naming the object and the field path.

    `ref` is None when not even the kind is known (a document that is not a
    mapping); `path` is empty when the object as a whole is wrong.
    """

    def __init__(self, ref: ObjectRef | None, path: str, message: str) -> None:
        self.ref = ref
        self.path = path
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [str(self.ref) if self.ref else "", self.path, self.message]
        return printable(": ".join(p for p in parts if p))
