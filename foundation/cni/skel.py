"""The part every CNI plugin shares: environment + stdin in, JSON + exit code out.

Modelled on the reference plugins' pkg/skel.  `dispatch` is pure with respect
to its inputs (environment mapping, stdin bytes) and returns the exit code and
the text for stdout, so the protocol handling is testable without exec'ing a
process.  Whatever goes wrong, the runtime receives the spec's error JSON;
unexpected exceptions are turned into one too (code 999, like the reference
plugins' generic errors) and their traceback goes to the log file named by
SKEIN_LOG, never to stdout or stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from foundation.cni import spec
from foundation.cni.names import IFNAME_RULE, is_ifname
from foundation.cni.spec import CniError

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
ERR_INTERNAL = 999

# Which CNI_* variables each command needs (SPEC.md, "Parameters").
_REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "STATUS": ("CNI_PATH",),
    "GC": ("CNI_PATH",),
    "VERSION": (),
}
_MIN_VERSION = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass
class Request:
    """One invocation of a plugin, as the runtime described it."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: dict[str, str] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    environ: dict[str, str] = field(default_factory=dict)

    @property
    def cni_version(self) -> str:
        return str(self.config.get("cniVersion", spec.SUPPORTED_VERSIONS[-1]))


class Plugin(Protocol):
    def add(self, req: Request) -> dict[str, Any]: ...
    def delete(self, req: Request) -> None: ...
    def check(self, req: Request) -> None: ...
    def status(self, req: Request) -> None: ...
    def gc(self, req: Request) -> None: ...


def validate_ifname(name: str) -> None:
    if not is_ifname(name):
        raise CniError(spec.ERR_INVALID_ENV, f"invalid CNI_IFNAME {name!r}", IFNAME_RULE)


def parse_cni_args(raw: str) -> dict[str, str]:
    """CNI_ARGS is 'K1=V1;K2=V2'."""
    out: dict[str, str] = {}
    for item in filter(None, raw.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(spec.ERR_INVALID_ENV, f"invalid CNI_ARGS item {item!r}",
                           "CNI_ARGS is a ';'-separated list of KEY=VALUE pairs")
        out[key] = value
    return out


def parse_request(environ: Mapping[str, str], stdin: bytes) -> Request:
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise CniError(spec.ERR_INVALID_ENV, "CNI_COMMAND is not set",
                       f"set CNI_COMMAND to one of {', '.join(COMMANDS)}")
    if command not in COMMANDS:
        raise CniError(spec.ERR_INVALID_ENV, f"unknown CNI_COMMAND {command!r}",
                       f"CNI_COMMAND is one of {', '.join(COMMANDS)}")
    req = Request(command=command, environ=dict(environ))
    if command == "VERSION":
        return req
    for var in _REQUIRED_ENV[command]:
        if not environ.get(var):
            raise CniError(spec.ERR_INVALID_ENV, f"required env variable {var} missing",
                           f"the runtime must set {var} for {command}")
    req.container_id = environ.get("CNI_CONTAINERID", "")
    if req.container_id and not _CONTAINER_ID.match(req.container_id):
        raise CniError(spec.ERR_INVALID_ENV, f"invalid CNI_CONTAINERID {req.container_id!r}",
                       "a container ID starts with a letter or digit and holds only "
                       "letters, digits, '_', '.' and '-'")
    req.netns = environ.get("CNI_NETNS", "")
    req.ifname = environ.get("CNI_IFNAME", "")
    if req.ifname:
        validate_ifname(req.ifname)
    req.args = parse_cni_args(environ.get("CNI_ARGS", ""))
    req.path = [p for p in environ.get("CNI_PATH", "").split(os.pathsep) if p]
    req.config = spec.parse_json(stdin)
    spec.check_version(req.config.get("cniVersion"))
    minimum = _MIN_VERSION.get(command)
    if minimum and not spec.at_least(req.cni_version, minimum):
        raise CniError(spec.ERR_INCOMPATIBLE_VERSION,
                       f"config version {req.cni_version} does not allow {command}",
                       f"{command} needs cniVersion {minimum} or later")
    return req


def error_version(stdin: bytes) -> str:
    """The cniVersion an error answer to `stdin` carries: the config's, else the newest."""
    try:
        version = json.loads(stdin).get("cniVersion")
    except Exception:  # noqa: BLE001 - any undecodable input falls back to the default
        return spec.SUPPORTED_VERSIONS[-1]
    return version if isinstance(version, str) and version else spec.SUPPORTED_VERSIONS[-1]


def error_reply(err: CniError, stdin: bytes) -> tuple[int, str]:
    """(exit code, stdout) of a command that failed with `err`: every producer
    of a plugin's error answer (this module, the fast path's agent side, the
    fallback) goes through here."""
    return 1, err.to_json(error_version(stdin))


def _log_exception(environ: Mapping[str, str]) -> None:
    path = environ.get("SKEIN_LOG")
    if not path:
        return
    import traceback

    try:
        with open(path, "a", encoding="utf-8") as log:
            traceback.print_exc(file=log)
    except OSError:
        pass


def dispatch(plugin: Plugin, environ: Mapping[str, str], stdin: bytes) -> tuple[int, str]:
    """Run one CNI command; return (exit code, stdout text)."""
    try:
        req = parse_request(environ, stdin)
        if req.command == "VERSION":
            return 0, json.dumps(spec.version_info())
        if req.command == "ADD":
            result = plugin.add(req)
            return 0, json.dumps(spec.result_for_version(result, req.cni_version))
        if req.command == "DEL":
            plugin.delete(req)
        elif req.command == "CHECK":
            plugin.check(req)
        elif req.command == "STATUS":
            plugin.status(req)
        elif req.command == "GC":
            plugin.gc(req)
        return 0, ""
    except CniError as err:
        return error_reply(err, stdin)
    except Exception as exc:  # noqa: BLE001 - the runtime must get JSON, never a traceback
        _log_exception(environ)
        return error_reply(internal_error(exc), stdin)


def internal_error(exc: BaseException) -> CniError:
    """What the runtime hears of an exception nobody foresaw (999, like the
    reference plugins' generic errors)."""
    return CniError(ERR_INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


def read_stdin() -> bytes:
    command = os.environ.get("CNI_COMMAND", "")
    return b"" if command == "VERSION" and sys.stdin.isatty() else sys.stdin.buffer.read()


def run(plugin: Plugin, stdin: bytes | None = None) -> None:
    """Entry point body: read stdin, dispatch, print, exit."""
    if stdin is None:
        stdin = read_stdin()
    code, out = dispatch(plugin, os.environ, stdin)
    finish(code, out)


def finish(code: int, out: str) -> None:
    if out:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
    sys.exit(code)
