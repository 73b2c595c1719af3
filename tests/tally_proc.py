"""A processor whose handlers leave a trace of every run, for the hardening tests.

``tally`` appends the command key to the file named by ``$TALLY_FILE`` (so a test counts how
many times a command's effects happened, across subprocess workers); ``huge_int`` and
``not_json`` return results that cannot be encoded as JSON.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from corec_plugin_kit import CommandContext, hookimpl


class Tally(BaseModel):
    n: int = 0


def _append(key: str) -> None:
    with Path(os.environ["TALLY_FILE"]).open("a") as out:  # one short line: no need to defer
        out.write(key + "\n")


async def tally(params: Tally, ctx: CommandContext) -> dict[str, Any]:
    _append(ctx.key)
    return {"n": params.n, "key": ctx.key}


async def huge_int(params: Tally, ctx: CommandContext) -> dict[str, Any]:
    return {"n": 2**70 + params.n}


async def not_json(params: Tally, ctx: CommandContext) -> dict[str, Any]:
    return {"n": object()}


def runs(path: Path) -> list[str]:
    """The command keys ``tally`` ran, in order (one line per run)."""
    return path.read_text().split() if path.exists() else []


@hookimpl
def corec_register_actions(register: Any) -> None:
    register("tally", tally, Tally)
    register("huge_int", huge_int, Tally)
    register("not_json", not_json, Tally)
