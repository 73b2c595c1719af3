"""The reviser processor: ``review_code``, ``revise`` and ``corec-kit reviser review|revise``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from corec_plugin_kit import CommandContext, HandlerError, InvalidParams, api, hookimpl

from .config import Backend, ReviserConfig

if TYPE_CHECKING:
    from .backends import Backend as ReviewBackend
    from .findings import FileReview
    from .revise import Offload


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


class ReviseParams(BaseModel):
    """CoreC codex's ``revise`` params: ``file``; ``backend`` is the kit's own, optional."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(
        max_length=4096, description="the Python file to revise, relative to reviser.root"
    )
    backend: Backend | None = Field(default=None, description="override reviser.backend")


def _config(ctx: CommandContext) -> ReviserConfig:
    config = ctx.config
    return config if isinstance(config, ReviserConfig) else ReviserConfig()


async def review_code(params: ReviewParams, ctx: CommandContext) -> dict[str, Any]:
    """Review Python code: the formatter's verdict and diff, pyflakes findings, suggestions."""
    from .backends import make_backend
    from .findings import Review, to_json

    config = _config(ctx)
    # black + pyflakes run in the kernel's process pool: a timeout or the worker's shutdown
    # kills them; ruff runs as subprocesses killed the same way.
    runner = functools.partial(api.run_in_process, ctx.kernel)
    backend = make_backend(config, params.backend, runner=runner)
    paths: list[Path] = []
    if params.source is not None:
        files = [await _review_source(backend, params.source, params, config)]
    else:
        offload = functools.partial(api.run_in_thread, ctx.kernel)
        paths, files = await _review_paths(backend, params, config, offload)
    review = Review(backend=backend.name, files=files)
    model_path = params.model or (str(config.model_path) if config.model_path else None)
    if model_path:
        from .model import prompt_source, suggest

        # For paths, the model sees the first few reviewed files (model.prompt_source).
        if params.source is not None:
            text = params.source
        else:
            text = prompt_source(paths, files, config.max_source_bytes)
        # The kernel's thread pool: its threads never keep a stopping worker alive.
        review.suggestions = await api.run_in_thread(
            ctx.kernel, suggest, text, model_path, config.model_max_new_tokens
        )
    return to_json(review)


async def _review_source(
    backend: ReviewBackend, source: str, params: ReviewParams, config: ReviserConfig
) -> FileReview:
    """``source``: one text, at most reviser.max_source_bytes, shown as ``filename``."""
    size = len(source.encode())
    if size > config.max_source_bytes:
        raise InvalidParams(
            f"source is {size} bytes, over reviser.max_source_bytes={config.max_source_bytes}",
            details=[{"loc": "source", "msg": "too large", "type": "too_large"}],
        )
    return await backend.areview(source, params.filename, fix=params.fix)


async def _review_paths(
    backend: ReviewBackend, params: ReviewParams, config: ReviserConfig, offload: Offload
) -> tuple[list[Path], list[FileReview]]:
    """``paths``: the files under them (inside reviser.root, at most reviser.max_files),
    collected through ``offload`` (the kernel's thread pool).

    Returns the files read and their reviews; with ``fix``, a file to reformat is reviewed
    again for its formatted text.
    """
    from .files import collect

    root = _review_root(config)
    targets = _contained(root, params.paths or [])
    found = await offload(collect, targets, root.resolve(), config)
    if len(found) > config.max_files:
        raise InvalidParams(
            f"{len(found)} files, over reviser.max_files={config.max_files}",
            details=[{"loc": "paths", "msg": "too many files", "type": "too_many"}],
        )
    paths = [p for p, _ in found]
    names = [n for _, n in found]
    files = await backend.areview_files(paths, names)
    if params.fix:
        for i, item in enumerate(files):
            if not item.formatted and item.error is None:
                files[i] = await _fixed(backend, paths[i], names[i], config.max_source_bytes)
    return paths, files


def _review_root(config: ReviserConfig) -> Path:
    """reviser.root, which ``paths`` needs."""
    if config.root is None:
        raise InvalidParams(
            "`paths` needs reviser.root in the config (the folder commands may read); "
            "or send `source` instead",
            details=[{"loc": "paths", "msg": "no reviser.root configured", "type": "config"}],
        )
    return config.root


def _contained(root: Path, paths: list[str]) -> list[Path]:
    """``paths`` resolved inside ``root``; InvalidParams names each one that is not."""
    from .files import PathProblem, contained

    try:
        return contained(root, paths)
    except PathProblem as exc:
        raise InvalidParams(
            f"paths outside what reviser.root allows: {exc}",
            details=[
                {"loc": "paths", "msg": f"{p['path']}: {p['reason']}", "type": "path"}
                for p in exc.problems
            ],
        ) from None


async def revise(params: ReviseParams, ctx: CommandContext) -> dict[str, Any]:
    """Review one file under reviser.root and rewrite it when the formatter changes it (codex)."""
    from .backends import make_backend
    from .files import PathProblem, contained
    from .revise import ReviseFailed, ReviseRefused, revise_file

    config = _config(ctx)
    if config.root is None:
        raise InvalidParams(
            "`revise` needs reviser.root in the config (the folder commands may write)",
            details=[{"loc": "file", "msg": "no reviser.root configured", "type": "config"}],
        )
    # The same containment as review_code's `paths`: relative, no `..`, resolved inside the root
    # (a symlink out is refused; one inside is followed to the file it names, which is written).
    try:
        (target,) = contained(config.root, [params.file])
    except PathProblem as exc:
        raise InvalidParams(
            f"cannot revise {params.file!r}: {exc.problems[0]['reason']}",
            details=[{"loc": "file", "msg": p["reason"], "type": "path"} for p in exc.problems],
        ) from None
    name = target.relative_to(config.root.resolve()).as_posix()
    runner = functools.partial(api.run_in_process, ctx.kernel)
    backend = make_backend(config, params.backend, runner=runner)
    offload = functools.partial(api.run_in_thread, ctx.kernel)
    try:
        return await revise_file(backend, target, name, config.max_source_bytes, offload)
    except ReviseRefused as exc:
        raise InvalidParams(
            f"cannot revise {name!r}: {exc}",
            details=[{"loc": "file", "msg": str(exc), "type": "file"}],
        ) from None
    except ReviseFailed as exc:
        raise HandlerError(str(exc), details={"path": name}) from None


async def _fixed(backend: ReviewBackend, path: Path, name: str, limit: int) -> FileReview:
    """One file again with ``fix``: batch runs report diffs, not the formatted text."""
    from .files import Unreadable, read_source
    from .findings import unreadable

    try:
        source = read_source(path, limit)
    except Unreadable as exc:
        return unreadable(name, str(exc))
    return await backend.areview(source, name, fix=True)


@hookimpl
def corec_config_model() -> type[BaseModel]:
    return ReviserConfig


@hookimpl
def corec_register_actions(register: Any) -> None:
    # No timeout of its own: kernel.handler_timeout_s bounds it, and an operator who reviews
    # large trees with black+pyflakes raises kernel.action_timeouts.review_code.
    register("review_code", review_code, ReviewParams)
    # The same for revise (one file; with black+pyflakes two runs of it when it changes):
    # kernel.action_timeouts.revise raises or lowers it. A timeout before the write leaves the
    # file as it was; the write itself is one os.replace, and revise is idempotent.
    register("revise", revise, ReviseParams)


@hookimpl
def corec_cli(group: Any) -> None:
    from .cli import add_commands

    add_commands(group)
