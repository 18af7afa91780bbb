"""Delegation to the IPAM plugin, exactly as SPEC.md describes it.

The plugin named by `ipam.type` is looked up in CNI_PATH and executed with the
same environment and the same network configuration on stdin; its stdout is
its result or its error JSON.  An error from the IPAM plugin is passed on to
the runtime unchanged (code, msg, details), so the user sees the real cause.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from foundation.cni import spec
from foundation.cni.skel import Plugin, Request
from foundation.cni.spec import CniError

IPAM_TIMEOUT = 60.0


def find_plugin(name: str, path: list[str]) -> str:
    for directory in path:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(spec.ERR_INVALID_CONFIG, f"IPAM plugin {name!r} not found in CNI_PATH",
                   f"install {name} into one of: {', '.join(path) or '(CNI_PATH is empty)'}")


class Ipam:
    """How the plugin reaches its IPAM plugin.  By default it execs it, as
    the spec says; `in_process` names IPAM plugins that run inside this
    process instead (type -> a factory of its skel Plugin): skein-agent passes
    skein-ipam there, which saves a Python start per pod.  The plugin
    executable stays the same code, so the result is identical."""

    def __init__(self, in_process: Mapping[str, Callable[[], Plugin]] | None = None) -> None:
        self.in_process: Mapping[str, Callable[[], Plugin]] = dict(in_process or {})

    def runs_in_process(self, config: dict[str, Any]) -> bool:
        return str(config["ipam"]["type"]) in self.in_process

    def __call__(self, req: Request, command: str, config: dict[str, Any] | None = None
                 ) -> dict[str, Any] | None:
        """Run the IPAM plugin for `command`; its decoded result (ADD) or None."""
        config = req.config if config is None else config
        factory = self.in_process.get(str(config["ipam"]["type"]))
        if factory is not None:
            return _run_in_process(factory(), req, command, config)
        return exec_ipam(req, command, config)


def exec_ipam(req: Request, command: str, config: dict[str, Any] | None = None
              ) -> dict[str, Any] | None:
    """Exec the IPAM plugin for `command`; return its decoded result (ADD) or None."""
    config = req.config if config is None else config
    plugin = find_plugin(str(config["ipam"]["type"]), req.path)
    env = dict(req.environ)
    env["CNI_COMMAND"] = command
    try:
        proc = subprocess.run([plugin], input=json.dumps(config).encode(), env=env,
                              capture_output=True, timeout=IPAM_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise CniError(spec.ERR_TRY_AGAIN_LATER, f"IPAM plugin {plugin} timed out",
                       f"no answer within {IPAM_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise CniError(spec.ERR_IO, f"cannot run IPAM plugin {plugin}", str(exc)) from None
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise _ipam_error(plugin, proc.returncode, out, proc.stderr.decode(errors="replace"))
    if command != "ADD":
        return None
    result = spec.parse_json(out, f"result of IPAM plugin {plugin}")
    return spec.normalize_result(result)


def _run_in_process(plugin: Plugin, req: Request, command: str,
                    config: dict[str, Any]) -> dict[str, Any] | None:
    sub = replace(req, command=command, config=config,
                  environ={**req.environ, "CNI_COMMAND": command})
    if command == "ADD":
        return spec.normalize_result(plugin.add(sub))
    method = {"DEL": "delete", "CHECK": "check", "STATUS": "status", "GC": "gc"}[command]
    getattr(plugin, method)(sub)
    return None


def _ipam_error(plugin: str, code: int, out: str, err: str) -> CniError:
    passed_on = spec.error_from_json(out)
    if passed_on is not None:
        return passed_on
    detail = (out or err).strip()[-500:]
    return CniError(spec.ERR_IPAM_FAILED, f"IPAM plugin {plugin} failed with exit code {code}",
                    detail)
