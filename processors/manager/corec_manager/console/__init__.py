"""``corec-kit manager console``: a live web page for workers, actions, dead letters and
history (docs/console.md).

Installed with the ``console`` extra (``pip install 'corec-manager[console]'``: Starlette and
uvicorn); the pages, their stylesheet and script ship inside the package (no CDN, no build
step). This module holds the command only; the application is in :mod:`.app`, imported when
the command runs.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from corec_plugin_kit.api import pass_kernel

from .auth import TOKEN_ENV, Auth, check_bind

EXTRA_HINT = "the console needs its extra: pip install 'corec-manager[console]'"


@click.command("console")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Any other than loopback needs a token.",
)
@click.option(
    "--port",
    default=8089,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to bind (0: any free port, printed).",
)
@click.option(
    "--token",
    default=None,
    metavar="TOKEN",
    envvar=TOKEN_ENV,
    show_envvar=True,
    help="The secret that signs in and allows changes (16+ characters). Without it, "
    "a loopback console makes one up and prints it in its URL.",
)
@pass_kernel
def console_cmd(kernel: Any, host: str, port: int, token: str | None) -> None:
    """Serve the operations console: overview, workers, processors and actions, dead letters,
    history.

    Open the URL it prints: it carries the token once, which signs the browser in. Reading is
    open to the local user on a loopback address; sending, replaying and deleting need the
    token (and the page's CSRF value).
    """  # fmt: skip
    refusal = check_bind(host, token)
    if refusal is not None:
        raise click.UsageError(refusal)
    try:
        import uvicorn

        from .app import build_app
    except ImportError as exc:
        raise click.ClickException(f"{EXTRA_HINT} ({exc})") from None
    auth = Auth.for_bind(host, token)
    app = build_app(kernel, auth)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    _announce(server, host, auth, given=token is not None)
    server.run()


def _announce(server: Any, host: str, auth: Auth, *, given: bool) -> None:
    """Print the console's URL (with the token when it made one up) once it listens."""
    original = server.startup

    async def startup(sockets: Any = None) -> None:
        await original(sockets=sockets)
        if server.should_exit:
            return
        bound = server.servers[0].sockets[0].getsockname() if server.servers else None
        port = bound[1] if bound else server.config.port
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}/"
        click.echo(f"console at {url}")
        click.echo(
            f"sign in: {url}?token={auth.token}"
            if not given
            else f"sign in: {url}?token=<the token> (or Authorization: Bearer)"
        )
        click.echo("stop with Ctrl-C")
        sys.stdout.flush()

    server.startup = startup
