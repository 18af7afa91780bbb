"""`skein-lab`: Skein's labs on one Linux machine, in network namespaces only.

    skein-lab demo [--pods N] [--report FILE] [--diagram FILE] [--keep]
    skein-lab down                      (the demo lab left running by --keep)
    skein-lab kube up [--workdir DIR] [--nodes N] [--no-dns]
    skein-lab kube status [--workdir DIR]
    skein-lab kube diagram [--workdir DIR] [--no-workload] FILE
    skein-lab kube e2e [--workdir DIR] [--focus REGEX] [--skip REGEX]
    skein-lab kube down [--workdir DIR]
    skein-lab --version
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from foundation.kube.cli import version_option
from lab.kube.cluster import DEFAULT_WORKDIR, KubeLab, KubeLabError

WORKDIR = click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
                       default=DEFAULT_WORKDIR, show_default=True,
                       help="where the cluster keeps its files, certificates and logs")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@version_option
def cli() -> None:
    """Skein's labs: everything in network namespaces with a random tag."""


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def demo(ctx: click.Context) -> None:
    """The netns lab demo (options: skein-lab demo --help)."""
    from lab.demo import main as demo_main

    sys.exit(demo_main(list(ctx.args)))


@cli.command("down")
def demo_down() -> None:
    """Remove the demo lab left running by `skein-lab demo --keep`."""
    from lab.demo import down as remove

    sys.exit(remove(log=click.echo))


@cli.group()
def kube() -> None:
    """A real Kubernetes cluster (upstream binaries) with Skein installed from its manifests."""


def _fail(err: Exception) -> None:
    click.echo(f"skein-lab: {err}", err=True)
    sys.exit(1)


@kube.command()
@WORKDIR
@click.option("--nodes", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option("--timeout", type=float, default=300, show_default=True,
              help="seconds to wait for every node Ready and every Skein pod Running")
@click.option("--dns/--no-dns", default=True, show_default=True,
              help="deploy CoreDNS (upstream's add-on) as the cluster DNS")
def up(workdir: Path, nodes: int, timeout: float, dns: bool) -> None:
    """Build (once) and start the cluster; returns when it is ready."""
    from lab.kube.build import ensure_kubernetes
    from lab.kube.image import ensure_images

    lab = None
    try:
        lab = KubeLab(workdir, nodes, log=click.echo)
        bin_dir = ensure_kubernetes(log=click.echo)
        images = ensure_images(bin_dir=bin_dir, log=click.echo)
        deploy_dns = None
        if dns:
            from lab.kube.coredns import for_up

            archive, deploy_dns = for_up(log=click.echo)
            images.append(archive)
        lab.up(images, bin_dir, timeout=timeout, dns=deploy_dns)
    except KeyboardInterrupt:
        click.echo("interrupted; removing what was made", err=True)
        if lab is not None:
            lab.down()
        sys.exit(130)
    except (KubeLabError, OSError, RuntimeError) as err:
        if lab is not None and lab.state is not None:
            click.echo(f"skein-lab: {err}\nthe lab is left as it is for a look; "
                       f"`skein-lab kube down --workdir {workdir}` removes it", err=True)
            sys.exit(1)
        _fail(err)
    assert lab is not None
    click.echo(f"\nkubectl runs inside the lab's control-plane namespace:\n{lab.hint()}")


@kube.command()
@WORKDIR
def status(workdir: Path) -> None:
    """Nodes, Skein's pods and what reaches what."""
    from lab.kube.status import report

    try:
        click.echo(report(KubeLab(workdir)))
    except KubeLabError as err:
        _fail(err)


@kube.command("diagram")
@WORKDIR
@click.option("--workload/--no-workload", default=True, show_default=True,
              help="first deploy (or find) the skein-demo web servers and their two "
                   "LoadBalancer Services")
@click.argument("file")
def kube_diagram(workdir: Path, workload: bool, file: str) -> None:
    """The cluster's picture (.svg, .png or .dot), drawn from its kernels and its API."""
    from lab.kube.diagram import write

    try:
        write(KubeLab(workdir), file, workload, log=click.echo)
    except (KubeLabError, ValueError) as err:
        _fail(err)


@kube.command()
@WORKDIR
@click.option("--focus", metavar="REGEX", default=None,
              help="run the tests whose names match (default: every [sig-network] "
                   "[Conformance] test and every [sig-network] Networking Granular Checks: "
                   "Pods test)")
@click.option("--skip", metavar="REGEX", default=None,
              help="also skip the tests whose names match (lab/kube/e2e_skips.py's list "
                   "is always skipped)")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where e2e.log and junit_01.xml go  [default: WORKDIR/e2e]")
@click.option("--timeout", default="60m", show_default=True,
              help="the whole suite's limit (--ginkgo.timeout)")
def e2e(workdir: Path, focus: str | None, skip: str | None, report_dir: Path | None,
        timeout: str) -> None:
    """Kubernetes' own e2e suite (e2e.test of the cluster's version) against the cluster."""
    from lab.kube.e2e import format_summary, run
    from lab.kube.image import ImageError

    try:
        summary = run(KubeLab(workdir, log=click.echo), focus=focus, skip=skip,
                      report_dir=report_dir, timeout=timeout, log=click.echo)
    except KeyboardInterrupt:
        click.echo("interrupted; the cluster is left running", err=True)
        sys.exit(130)
    except (KubeLabError, ImageError, OSError, RuntimeError) as err:
        _fail(err)
    click.echo(format_summary(summary))
    sys.exit(0 if summary.ok else 1)


@kube.command()
@WORKDIR
def down(workdir: Path) -> None:
    """Remove the cluster: namespaces, processes, mounts, cgroups and the work directory."""
    try:
        lab = KubeLab(workdir, log=click.echo)
        if lab.state is None:
            click.echo(f"no kube lab in {workdir}")
            return
        problems = lab.down()
    except KubeLabError as err:
        _fail(err)
    if problems:
        _fail(KubeLabError("; ".join(problems)))
    click.echo("kube lab removed")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
