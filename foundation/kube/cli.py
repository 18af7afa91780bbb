"""The command line the Skein daemons share: where cluster state comes from, how
they log, which version they are, and how a usage error reads.

    skein-agent | skein-speaker | skein-controller  [daemon flags]
        [--manifests FILE | --kubeconfig FILE [--context NAME]]    default: in-cluster
        [--log-level debug|info|warning|error] [--log-format text|json]
        [--version] [-h | --help]

Source: `--manifests FILE` follows a multi-document YAML file of Kubernetes
objects (FileSource: the lab and the tests); `--kubeconfig FILE` the API
server that file names (`--context` picks one of its contexts, default the
current one); neither is the pod's service account (in-cluster), which is
what the install manifests use.

Logging goes to stderr, one record a line: `--log-format text` (the default)
is `TIME [NODE] LOGGER LEVEL MESSAGE`, `--log-format json` one JSON object a
line with the keys `time` (RFC 3339, UTC), `level`, `logger`, `message`, and
`node`, `exception` when there is one, for a log collector to index.

A daemon is a click command built from these decorators, run by `run()`,
which turns every usage error (click's own, or BadFlags, which the daemon
raises after checking its flags together) and every Refused (a configuration
it cannot run with) into ONE line on stderr, `PROG: what is wrong`, and exit
status 2.  `parse()` gives the values a command line would run with, without
running it (the install tests check the manifests' command lines with it).

This lives under foundation/kube, not beside the CNI modules in foundation/:
the CNI executables carry foundation's top-level modules and must not need
click.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

import click

if TYPE_CHECKING:
    from foundation.kube.sources.base import Source
    from foundation.kube.sources.kube import KubeClient

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# What a daemon's parsed flags are handed around as: click's values by the
# flags' names (`--cni-conf-dir` is `args.cni_conf_dir`).
Args = SimpleNamespace

# The daemons, by what they read from the API (foundation.kube.sources.kube.KINDS_OF).
Reader = Literal["agent", "speaker", "controller"]

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"],
                                    "max_content_width": 100}

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
# Loud at DEBUG and of no use to an operator: pyroute2 logs every netlink
# message (enough to slow pod set-up down), and makes an asyncio loop per socket.
QUIET_LOGGERS = ("pyroute2", "asyncio")


# -- --version -----------------------------------------------------------------------------

def version() -> str:
    """Skein's version as installed (pip metadata)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("skein")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"{ctx.find_root().info_name} {version()}")
    ctx.exit()


def version_option(func: F) -> F:
    """`--version`: print `PROG VERSION` and exit 0, before any other flag is checked."""
    return click.option("--version", is_flag=True, expose_value=False, is_eager=True,
                        callback=_print_version,
                        help="Print the version and exit.")(func)


# -- errors --------------------------------------------------------------------------------

class BadFlags(click.UsageError):
    """Flags a daemon refuses together (each flag alone parsed); exit status 2."""


class Refused(click.ClickException):
    """A configuration the daemon cannot run with (a kubeconfig it cannot load, a
    port it cannot bind); exit status 2, like a usage error."""

    exit_code = 2


# -- the source ----------------------------------------------------------------------------

def source_options(func: F) -> F:
    """`--manifests`, `--kubeconfig`, `--context`; in-cluster without the first two."""
    for option in reversed((
            click.option("--manifests", metavar="FILE", default=None,
                         help="Follow this multi-document YAML file of Kubernetes objects "
                              "(labs, tests) instead of the API."),
            click.option("--kubeconfig", metavar="FILE", default=None,
                         help="Follow the Kubernetes API through this kubeconfig.  "
                              "[default without --manifests: the pod's service account, "
                              "in-cluster]"),
            click.option("--context", metavar="NAME", default=None,
                         help="The --kubeconfig context to use.  [default: its current one]"))):
        func = option(func)
    return func


class SourceError(Refused):
    """The Kubernetes configuration cannot be loaded; the message is one line."""


def check_source(args: Args) -> None:
    """The source flags together; BadFlags if they contradict each other."""
    if args.manifests is not None and args.kubeconfig is not None:
        raise BadFlags("--manifests and --kubeconfig are two sources: give one "
                       "(neither: the Kubernetes API in-cluster)")
    if args.context is not None and args.kubeconfig is None:
        raise BadFlags("--context names a context of --kubeconfig's file: give "
                       "--kubeconfig too")


def describe_source(args: Args) -> str:
    """Where the flags say cluster state comes from, for the start-up log line."""
    if args.manifests is not None:
        return f"manifests {args.manifests}"
    if args.kubeconfig is not None:
        context = f" (context {args.context})" if args.context else ""
        return f"the Kubernetes API through {args.kubeconfig}{context}"
    return "the Kubernetes API in-cluster"


def kube_client(args: Args) -> KubeClient:
    """The API client the flags name; SourceError when its configuration is unusable."""
    from foundation.kube.sources.kube import KubeClient, one_line

    try:
        return KubeClient.from_kubeconfig(args.kubeconfig, args.context)
    except Exception as exc:  # noqa: BLE001 - any config-loading failure, said in one line
        where = "in-cluster" if args.kubeconfig is None else f"kubeconfig {args.kubeconfig}"
        if args.context is not None:
            where += f", context {args.context}"
        raise SourceError(f"cannot reach the Kubernetes API ({where}): {one_line(exc)}"
                          ) from None


def make_source(args: Args, reader: Reader,
                metallb_namespace: str | None = "metallb-system") -> Source:
    """A FileSource for --manifests, else a KubeSource reading what the `reader`
    daemon needs; not started.  The KubeSource's client is `source.client` (for
    the writes some daemons make).  Refused if the kubeconfig cannot be loaded."""
    if args.manifests is not None:
        from foundation.kube.sources.file import FileSource

        return FileSource(args.manifests)
    # Imported only now: the kubernetes package is slow to import, and the
    # file-mode daemons of the lab never need it.
    from foundation.kube.sources.kube import KINDS_OF, KubeSource

    return KubeSource(kube_client(args), KINDS_OF[reader], metallb_namespace)


# -- logging -------------------------------------------------------------------------------

def logging_options(func: F) -> F:
    """`--log-level debug|info|warning|error` (any case), `--log-format text|json`."""
    func = click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text",
                        show_default=True, help="One line of text or one JSON object per "
                        "record, on stderr.")(func)
    return click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
                        default="info", show_default=True,
                        help="Log records of this level and above.")(func)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (+ node, exception)."""

    def __init__(self, node: str | None = None) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        if self.node is not None:
            out["node"] = self.node
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler[IO[str]]):
    """Writes to whatever sys.stderr is at the time of the record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def log_handler(log_format: str, node: str | None = None,
                stream: IO[str] | None = None) -> logging.Handler:
    """The handler `setup_logging` installs (to `stream`, default stderr)."""
    handler: logging.Handler = (logging.StreamHandler(stream) if stream is not None
                                else _StderrHandler())
    if log_format == "json":
        handler.setFormatter(JsonFormatter(node))
    else:
        who = f" {node}" if node is not None else ""
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s{who} %(name)s %(levelname)s %(message)s"))
    return handler


def setup_logging(level: str, log_format: str = "text", node: str | None = None) -> None:
    """The daemons' one logging set-up: records at `level` and above, on stderr.

    As logging.basicConfig, it leaves a process whose root logger already has a
    handler (a test runner calling a daemon's main()) as it is."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(log_handler(log_format, node))
        root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def daemon_options(func: F) -> F:
    """Everything the daemons share: the source, the logging flags, --version."""
    return source_options(logging_options(version_option(func)))


def begin(args: Args, node: str | None = None) -> None:
    """What every daemon does first with the shared flags: check the source flags
    (BadFlags), set up logging (naming `node` in every record) and say which
    version runs and where it reads the cluster from."""
    check_source(args)
    setup_logging(args.log_level, args.log_format, node)
    ctx = click.get_current_context(silent=True)
    prog = ctx.find_root().info_name if ctx is not None else "skein"
    log.info("%s %s, following %s", prog, version(), describe_source(args))


# -- running a command ---------------------------------------------------------------------

def _one_line(text: str) -> str:
    return " ".join(text.split())


def run(command: click.Command, argv: Sequence[str] | None = None) -> int:
    """Run `command` on `argv` (default sys.argv[1:]); its exit status.

    Usage errors are one line on stderr and status 2; --help and --version 0."""
    prog = command.name or "skein"
    try:
        result = command.main(args=None if argv is None else list(argv), prog_name=prog,
                              standalone_mode=False)
    except click.UsageError as exc:
        # A flag click itself refused gets a pointer to the help; a combination
        # the daemon refused says all there is to say.
        hint = "" if isinstance(exc, BadFlags) else f" (see {prog} --help)"
        print(f"{prog}: {_one_line(exc.format_message())}{hint}", file=sys.stderr)
        return 2
    except click.ClickException as exc:
        print(f"{prog}: {_one_line(exc.format_message())}", file=sys.stderr)
        return exc.exit_code
    except click.Abort:
        return 130
    return result if isinstance(result, int) else 0


def parse(command: click.Command, argv: Sequence[str]) -> Args:
    """The values `command` would run with for `argv`; click.UsageError if refused."""
    with command.make_context(command.name, list(argv)) as ctx:
        return Args(**ctx.params)
