"""skeinctl completion bash|zsh|fish: the shell's completion script, as kubectl prints its.

    source <(skeinctl completion bash)                  # this shell; or, for good:
    skeinctl completion bash > /etc/bash_completion.d/skeinctl
    skeinctl completion zsh > "${fpath[1]}/_skeinctl"
    skeinctl completion fish > ~/.config/fish/completions/skeinctl.fish

The script calls skeinctl back (click's completion protocol, `_SKEINCTL_COMPLETE`),
so it completes commands, options and choices of the installed version.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish)."""
    root = ctx.find_root()
    cls = get_completion_class(shell)
    assert cls is not None  # one of click's own shells
    # For the installed executable, whatever name this process was started by.
    click.echo(cls(root.command, {}, "skeinctl", "_SKEINCTL_COMPLETE").source())
