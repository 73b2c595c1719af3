"""``corec-kit completion SHELL``: the shell completion script (click's built-in completion).

Mounted lazily by :mod:`corec_plugin_kit.cli.core` (``LAZY_COMMANDS``); the script it prints
completes against the root group of that module. What completes, and how, lives with the
commands: ``KitGroup`` and ``ProcessorGroup`` (commands, processor groups, the safety net that
turns a failure into no completion) and ``complete_processor`` in ``core``,
``complete_action`` in ``state``.
"""

from __future__ import annotations

import click

from .core import COMPLETE_VAR, PROG, cli


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script (click's built-in completion).

    TAB then completes commands, each processor's group with its commands and their options,
    action names (exec, describe and send ACTION, history --action; these load the processors)
    and processor names (--load, --disable; from the installed entry points, nothing loaded).

    \b
    bash:  eval "$(corec-kit completion bash)"   (in ~/.bashrc; bash 4.4 or newer)
    zsh:   eval "$(corec-kit completion zsh)"    (in ~/.zshrc, after compinit)
    fish:  corec-kit completion fish > ~/.config/fish/completions/corec-kit.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # click knows all three shells
    click.echo(cls(cli, {}, PROG, COMPLETE_VAR).source())
