"""``corec-kit check``: the config, the processors, Redis and the database, each reported.

Mounted lazily by :mod:`corec_plugin_kit.cli.core` (``LAZY_COMMANDS``). The checks themselves are
:mod:`corec_plugin_kit.health`'s; this module builds the kernel from the global options, hands it
over and prints the report.
"""

from __future__ import annotations

import sys

import click

from ..errors import CorecError
from ..redaction import redact_data
from .state import echo_json, get_state


@click.command("check")
@click.argument("config_file", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(config_file: str | None, as_json: bool) -> None:
    """Validate the config and reach Redis and the database.

    Exit 0 when all is well, 3 for a config error, 4 for a processor error, 5 when Redis cannot
    be reached, 6 when the database cannot be reached.
    """
    import asyncio

    from ..health import config_failure, run_checks

    state = get_state()
    if config_file:
        state.config = config_file
    try:
        kernel = state.kernel()
    except CorecError as exc:
        report, exit_code = config_failure(exc)
    else:
        report, exit_code = asyncio.run(run_checks(kernel, strict=state.strict))
    report = redact_data(report)  # the details quote URLs; never their passwords
    if as_json:
        echo_json(report)
    else:
        for name, entry in report.items():
            mark = "ok " if entry["ok"] else "FAIL"
            click.echo(f"[{mark}] {name}: {entry['detail']}")
    if exit_code:
        sys.exit(exit_code)
