"""The reviser processor: ``review_code`` and ``corec-kit reviser review``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from corec_plugin_kit import CommandContext, InvalidParams, hookimpl

from .config import Backend, ReviserConfig

if TYPE_CHECKING:
    from .backends import Backend as ReviewBackend
    from .findings import FileReview


class ReviewParams(BaseModel):
    """Exactly one of ``source`` or ``paths``."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(default=None, description="Python source text to review")
    paths: list[str] | None = Field(
        default=None, description="files or folders, relative to reviser.root", max_length=1000
    )
    fix: bool = Field(
        default=False, description="return the formatted text (files are never written)"
    )
    backend: Backend | None = Field(default=None, description="override reviser.backend")
    model: str | None = Field(
        default=None, description="path of a local transformers model for suggestions"
    )
    filename: str = Field(
        default="source.py", max_length=200, description="name shown for `source`"
    )

    @model_validator(mode="after")
    def _one_input(self) -> ReviewParams:
        if (self.source is None) == (not self.paths):
            raise ValueError("give exactly one of `source` (text) or `paths` (a list)")
        return self


def _config(ctx: CommandContext) -> ReviserConfig:
    config = ctx.config
    return config if isinstance(config, ReviserConfig) else ReviserConfig()


async def review_code(params: ReviewParams, ctx: CommandContext) -> dict[str, Any]:
    """Review Python code: the formatter's verdict and diff, pyflakes findings, suggestions."""
    from .backends import make_backend
    from .files import PathProblem, collect, contained
    from .findings import Review, to_json

    config = _config(ctx)
    backend = make_backend(config, params.backend)
    if params.source is not None:
        size = len(params.source.encode())
        if size > config.max_source_bytes:
            raise InvalidParams(
                f"source is {size} bytes, over reviser.max_source_bytes={config.max_source_bytes}",
                details=[{"loc": "source", "msg": "too large", "type": "too_large"}],
            )
        files = [await backend.areview(params.source, params.filename, fix=params.fix)]
    else:
        if config.root is None:
            raise InvalidParams(
                "`paths` needs reviser.root in the config (the folder commands may read); "
                "or send `source` instead",
                details=[{"loc": "paths", "msg": "no reviser.root configured", "type": "config"}],
            )
        try:
            targets = contained(config.root, params.paths or [])
        except PathProblem as exc:
            raise InvalidParams(
                f"paths outside what reviser.root allows: {exc}",
                details=[
                    {"loc": "paths", "msg": f"{p['path']}: {p['reason']}", "type": "path"}
                    for p in exc.problems
                ],
            ) from None
        found = collect(targets, config.root.resolve(), config)
        if len(found) > config.max_files:
            raise InvalidParams(
                f"{len(found)} files, over reviser.max_files={config.max_files}",
                details=[{"loc": "paths", "msg": "too many files", "type": "too_many"}],
            )
        paths = [p for p, _ in found]
        names = [n for _, n in found]
        files = await asyncio.to_thread(backend.review_files, paths, names)
        if params.fix:
            for i, item in enumerate(files):
                if not item.formatted and item.error is None:
                    files[i] = await asyncio.to_thread(_fixed, backend, paths[i], names[i])
    review = Review(backend=backend.name, files=files)
    model_path = params.model or (str(config.model_path) if config.model_path else None)
    if model_path:
        from .model import suggest

        # For paths, the model sees the first few reviewed files: its context is small, and a
        # prompt made of nothing would give suggestions about nothing.
        if params.source is not None:
            text = params.source
        else:
            text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in paths[:5])
        review.suggestions = await asyncio.to_thread(
            suggest, text, model_path, config.model_max_new_tokens
        )
    return to_json(review)


def _fixed(backend: ReviewBackend, path: Path, name: str) -> FileReview:
    """One file again with ``fix``: batch runs report diffs, not the formatted text."""
    source = path.read_text(encoding="utf-8")
    return backend.review(source, name, fix=True)


@hookimpl
def corec_config_model() -> type[BaseModel]:
    return ReviserConfig


@hookimpl
def corec_register_actions(register: Any) -> None:
    register("review_code", review_code, ReviewParams, timeout_s=300)


@hookimpl
def corec_cli(group: Any) -> None:
    from .cli import add_commands

    add_commands(group)
