"""`skein-lab`: Skein's labs on one Linux machine, in network namespaces only.

    skein-lab demo [--pods N] [--report FILE] [--diagram FILE]
    skein-lab kube up [--workdir DIR] [--nodes N]
    skein-lab kube status [--workdir DIR]
    skein-lab kube down [--workdir DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lab.kube.cluster import DEFAULT_WORKDIR, KubeLab, KubeLabError

WORKDIR = click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
                       default=DEFAULT_WORKDIR, show_default=True,
                       help="where the cluster keeps its files, certificates and logs")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="skein")
def cli() -> None:
    """Skein's labs: everything in network namespaces with a random tag."""


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def demo(ctx: click.Context) -> None:
    """The netns lab demo (options: skein-lab demo --help)."""
    from lab.demo import main as demo_main

    sys.exit(demo_main(list(ctx.args)))


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
def up(workdir: Path, nodes: int, timeout: float) -> None:
    """Build (once) and start the cluster; returns when it is ready."""
    from lab.kube.build import ensure_kubernetes
    from lab.kube.image import ensure_images

    lab = None
    try:
        lab = KubeLab(workdir, nodes, log=click.echo)
        bin_dir = ensure_kubernetes(log=click.echo)
        images = ensure_images(bin_dir=bin_dir, log=click.echo)
        lab.up(images, bin_dir, timeout=timeout)
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
