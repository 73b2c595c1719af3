"""``corec-kit completion SHELL``: the shell completion script (click's built-in completion).

Mounted lazily by :mod:`corec_plugin_kit.cli.core` (``LAZY_COMMANDS``); the script it prints
completes against the root group of that module.
"""

from __future__ import annotations

import click

from .core import COMPLETE_VAR, PROG, cli


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script (click's built-in completion).

    \b
    bash:  eval "$(corec-kit completion bash)"   (or save it under ~/.bash_completion.d/)
    zsh:   eval "$(corec-kit completion zsh)"
    fish:  corec-kit completion fish > ~/.config/fish/completions/corec-kit.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # click knows all three shells
    click.echo(cls(cli, {}, PROG, COMPLETE_VAR).source())
