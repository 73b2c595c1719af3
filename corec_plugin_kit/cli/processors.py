"""``corec-kit list-processors``, ``actions``, ``describe`` and ``exec``: what the installed
processors offer, and one command run in-process.

Mounted lazily by :mod:`corec_plugin_kit.cli.core` (``LAZY_COMMANDS``); module level imports
click and the cli package's state only, the kernel loads when a command runs.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ..errors import ProcessorError, exit_code_for
from ..redaction import redact, redact_data
from .state import complete_action, echo_json, get_state, parse_params, with_params


@click.command("list-processors")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--strict", is_flag=True, help="Exit 4 if any processor failed to load.")
def list_processors(as_json: bool, strict: bool) -> None:
    """List installed processors: name, distribution, version, status, reason, actions."""
    state = get_state()
    processors = state.processors()
    infos = [info.as_dict() for info in processors.infos.values()]
    if as_json:
        echo_json(infos)
    else:
        for info in infos:
            dist = f"{info['distribution']} {info['version']}" if info["distribution"] else "-"
            line = f"{info['name']:<14} {info['status']:<9} {dist}"
            if info["actions"]:
                line += f"  actions: {', '.join(info['actions'])}"
            click.echo(line)
            if info["reason"]:
                click.echo(f"{'':<14} reason: {info['reason']}")
        if not infos:
            click.echo("no processors installed (pip install corec-manager, or see README)")
    failed = [info["name"] for info in infos if info["status"] == "failed"]
    if strict and failed:
        raise ProcessorError(f"processors failed to load: {', '.join(failed)} (see the reasons)")


@click.command("actions")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def actions(as_json: bool) -> None:
    """Show the routing table: each action and the processor that claims it."""
    kernel = get_state().kernel()
    rows = {
        name: {
            "processor": spec.processor,
            "distribution": spec.distribution,
            "blocking": spec.blocking,
            "description": spec.description,
        }
        for name, spec in sorted(kernel.routing.items())
    }
    if as_json:
        echo_json(rows)
        return
    for name, row in rows.items():
        click.echo(f"{name:<22} {row['processor']:<12} {row['description']}")


@click.command("describe")
@click.argument("action", shell_complete=complete_action)
def describe(action: str) -> None:
    """Print an action's description and the JSON Schema of its params."""
    kernel = get_state().kernel()
    echo_json(kernel.routing.route(action).describe())


@click.command("exec")
@click.argument("action", shell_complete=complete_action)
@with_params
def exec_(
    action: str, pairs: tuple[str, ...], params_json: str | None, command_id: str | None
) -> None:
    """Run one command in-process (no Redis) and print its result envelope.

    Exit 0 when the handler succeeded, 1 on a handler error or timeout, 2 when the command is
    invalid (unknown action, invalid params).

    \b
    Example:
      corec-kit exec ping
      corec-kit exec generate_plugin -p plugin_name=my_plugin -p dry_run:=true
    """
    import asyncio

    params = parse_params(pairs, params_json)
    kernel = get_state().kernel()
    command: dict[str, Any] = {"action": action, "params": params}
    if command_id:
        command["id"] = command_id

    async def run() -> dict[str, Any]:
        async with kernel:
            return await kernel.execute(command)

    envelope = asyncio.run(run())
    if envelope["status"] != "ok" and envelope.get("error"):
        envelope["error"] = redact_data(envelope["error"])
    echo_json(envelope)
    if envelope["status"] != "ok":
        err = envelope["error"] or {}
        click.echo(f"Error: {redact(str(err.get('message')))}", err=True)
        sys.exit(exit_code_for(str(err.get("type", ""))))
