"""``corec-kit asyncapi``: the AsyncAPI 3.0 document of this install
(:mod:`corec_plugin_kit.asyncapi` builds it), as JSON or YAML.

Mounted lazily by :mod:`corec_plugin_kit.cli.core` (``LAZY_COMMANDS``); module level imports
click and the cli package's state only: the kernel, the document builder and PyYAML load when
the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .state import echo_json, get_state

#: What to install for ``--format yaml`` (the line of the kit's dependencies).
YAML_REQUIREMENT = "pyyaml>=6.0.2"


def _yaml() -> Any:
    """The ``yaml`` module (PyYAML), or a clear error saying what to install."""
    from importlib import import_module

    try:
        return import_module("yaml")
    except ImportError:
        raise click.ClickException(
            f"--format yaml needs PyYAML, which is not installed: pip install '{YAML_REQUIREMENT}' "
            "(or use --format json)"
        ) from None


@click.command("asyncapi")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "yaml"]),
    help="json or yaml. [default: yaml when FILE ends in .yaml or .yml, else json]",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the document to FILE instead of stdout.",
)
def asyncapi(fmt: str | None, output: Path | None) -> None:
    """Print the AsyncAPI 3.0 document of this install's streams, commands and results.

    One message per routed action with its params JSON Schema, the result envelope with every
    error type, the dead-letter entry; channels for stream_in, stream_out and the dead-letter
    stream (of every partition); the server from kernel.redis_url (password redacted). Validate
    it or generate clients from it with the AsyncAPI tools.
    """
    if fmt is None:
        fmt = "yaml" if output is not None and output.suffix in (".yaml", ".yml") else "json"
    yaml = _yaml() if fmt == "yaml" else None  # before any work: say what is missing first
    from ..asyncapi import build_document

    document = build_document(get_state().kernel())
    if yaml is not None:
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    elif output is None:
        echo_json(document)  # the kit's JSON output, as every other command's
        return
    else:
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
