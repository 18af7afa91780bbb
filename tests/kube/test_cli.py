"""The daemons' shared command line (foundation.kube.cli): the same source and
logging flags on skein-agent, skein-speaker and skein-controller, --version on
every executable, usage errors as one line and exit status 2, JSON logs.

Nothing here opens a socket: the daemons run in file mode, or stop at their
flags."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import pytest

from cni_plugin.agent import main as agent_main
from foundation.kube import cli
from speaker import main as speaker_main
from speaker.controller import main as controller_main
from tests.controller.helpers import DEADLINE, wait_until

DAEMONS = {"skein-agent": agent_main, "skein-speaker": speaker_main,
           "skein-controller": controller_main}
EXECUTABLES = [*DAEMONS, "skeinctl", "skein-lab"]
# What each daemon needs besides the shared flags to get past its own checks.
REQUIRED = {"skein-agent": ["--node", "n1"], "skein-speaker": ["--node", "n1"],
            "skein-controller": []}
SHARED = ["manifests", "kubeconfig", "context", "log_level", "log_format", "version"]


def exe(name: str) -> str:
    return os.path.join(sysconfig.get_path("scripts"), name)


def options(command: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name}


@pytest.mark.parametrize("name", DAEMONS)
def test_every_daemon_has_the_same_shared_flags(name: str) -> None:
    command = DAEMONS[name].command
    assert command.name == name
    mine = options(command)
    reference = options(speaker_main.command)
    for flag in SHARED:
        assert flag in mine, (name, flag)
        a, b = mine[flag], reference[flag]
        assert (a.opts, a.default, a.help, repr(a.type)) == (b.opts, b.default, b.help,
                                                             repr(b.type)), (name, flag)
    assert "in_cluster" not in mine
    # Without a source flag, the daemon follows the API in-cluster.
    args = cli.parse(command, REQUIRED[name])
    assert (args.manifests, args.kubeconfig, args.context) == (None, None, None)
    assert cli.describe_source(args) == "the Kubernetes API in-cluster"
    assert (args.log_level, args.log_format) == ("info", "text")


@pytest.mark.parametrize("name", EXECUTABLES)
def test_version_on_every_executable(name: str) -> None:
    proc = subprocess.run([exe(name), "--version"], capture_output=True, text=True,
                          timeout=DEADLINE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{name} {version('skein')}\n"


@pytest.mark.parametrize("name", DAEMONS)
def test_a_bad_log_level_is_a_usage_error_in_one_line(name: str, capsys: Any) -> None:
    assert DAEMONS[name].main([*REQUIRED[name], "--manifests", "x.yaml",
                               "--log-level", "verbose"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"{name}: Invalid value for '--log-level': 'verbose' is not one "
                            f"of 'debug', 'info', 'warning', 'error'. (see {name} --help)\n")


def test_a_bad_log_level_ends_the_process_without_a_traceback() -> None:
    proc = subprocess.run([exe("skein-speaker"), "--node", "n1", "--log-level", "verbose"],
                          capture_output=True, text=True, timeout=DEADLINE)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "--log-level" in proc.stderr


@pytest.mark.parametrize("level", ["debug", "DEBUG", "Warning", "error"])
def test_log_levels_take_any_case(level: str) -> None:
    args = cli.parse(controller_main.command, ["--log-level", level])
    assert args.log_level == level.lower()


@pytest.mark.parametrize(("argv", "message"), [
    (["--manifests", "a.yaml", "--kubeconfig", "k"],
     "--manifests and --kubeconfig are two sources: give one (neither: the Kubernetes API "
     "in-cluster)"),
    (["--context", "prod"], "--context names a context of --kubeconfig's file: give "
                            "--kubeconfig too"),
    (["--in-cluster"], "No such option '--in-cluster'."),
])
@pytest.mark.parametrize("name", DAEMONS)
def test_source_flags_are_checked_alike(name: str, argv: list[str], message: str,
                                        capsys: Any) -> None:
    assert DAEMONS[name].main([*REQUIRED[name], *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{name}: {message}") and err.count("\n") == 1, err


@pytest.mark.parametrize("name", DAEMONS)
def test_an_unusable_kubeconfig_is_refused_in_one_line(name: str, tmp_path: Path,
                                                      capsys: Any) -> None:
    missing = tmp_path / "nope.kubeconfig"
    assert DAEMONS[name].main([*REQUIRED[name], "--kubeconfig", str(missing),
                               "--context", "c1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{name}: cannot reach the Kubernetes API (kubeconfig {missing}, "
                          "context c1): ") and err.count("\n") == 1, err


def test_context_reaches_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from foundation.kube.sources import kube

    seen: list[tuple[str | None, str | None]] = []
    monkeypatch.setattr(kube.KubeClient, "from_kubeconfig",
                        classmethod(lambda cls, path, context: seen.append((path, context))))
    for argv, expected in ((["--kubeconfig", "k", "--context", "c"], ("k", "c")),
                           (["--kubeconfig", "k"], ("k", None)),
                           ([], (None, None))):
        cli.kube_client(cli.parse(agent_main.command, argv))
        assert seen.pop() == expected


def record(message: str, level: int = logging.WARNING, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("speaker.daemon", level, __file__, 1, message, (), exc_info)


def test_json_log_lines() -> None:
    stream = io.StringIO()
    handler = cli.log_handler("json", node="node1", stream=stream)
    handler.handle(record("address 10.0.0.1 \"moved\"\nto node2"))
    handler.handle(record("failed", logging.ERROR, exc=True))
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert set(first) == {"time", "level", "logger", "message", "node"}
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert (first["level"], first["logger"], first["node"]) == ("warning", "speaker.daemon",
                                                                "node1")
    assert first["message"] == "address 10.0.0.1 \"moved\"\nto node2"
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]
    assert "node" not in json.loads(_one(cli.log_handler("json"), record("x")))


def _one(handler: logging.Handler, rec: logging.LogRecord) -> str:
    assert handler.formatter is not None
    return handler.formatter.format(rec)


def test_text_log_lines_name_the_node() -> None:
    line = _one(cli.log_handler("text", node="node1"), record("hello"))
    assert line.endswith(" node1 speaker.daemon WARNING hello")
    assert _one(cli.log_handler("text"), record("hello")).endswith(" speaker.daemon WARNING hello")


def test_a_daemon_logs_json_lines(tmp_path: Path) -> None:
    manifests = tmp_path / "m.yaml"
    manifests.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n")
    log = tmp_path / "controller.log"
    proc = subprocess.Popen([exe("skein-controller"), "--manifests", str(manifests),
                             "--log-format", "json", "--log-level", "debug"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        wait_until("a log line", lambda: "revision 1" in log.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    assert any(x["level"] == "info" and "revision 1" in x["message"] for x in lines)


def test_setup_leaves_a_configured_process_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """As logging.basicConfig: a process that set up logging (a test runner) keeps
    its handlers; the noisy libraries are quieted either way."""
    root = logging.getLogger()
    marker = logging.NullHandler()
    monkeypatch.setattr(root, "handlers", [marker])
    cli.setup_logging("debug", "json", "n1")
    assert root.handlers == [marker]
    assert logging.getLogger("pyroute2").level == logging.WARNING


def test_the_speakers_help_shows_its_real_default_socket() -> None:
    from speaker.api.server import DEFAULT_SOCKET
    from speaker.api.service import SHOWN_SOCKET

    assert SHOWN_SOCKET == DEFAULT_SOCKET
    assert cli.parse(speaker_main.command, ["--node", "n1"]).api_socket == DEFAULT_SOCKET
