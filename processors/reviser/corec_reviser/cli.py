"""``corec-kit reviser review PATH...`` and ``corec-kit reviser revise FILE``.

Both are click commands defined at module level; :func:`add_commands` (called from the
``corec_cli`` hook) mounts them on the ``corec-kit reviser`` group. Each command reads the
``reviser`` config section, runs a back-end and prints its answer; the steps are small helpers
below it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

import click

if TYPE_CHECKING:
    from .backends import Backend
    from .config import ReviserConfig
    from .findings import FileReview, Review

#: Files per call to the back-end: the progress bar moves once per batch.
BATCH_SIZE = 200

#: ``--backend``, shared by both commands.
backend_option = click.option(
    "--backend", type=click.Choice(["ruff", "black+pyflakes"]), help="Override reviser.backend."
)


def add_commands(group: click.Group) -> None:
    """Mount ``review`` and ``revise`` on ``corec-kit reviser``."""
    group.add_command(review)
    group.add_command(revise)


def reviser_config() -> ReviserConfig:
    """The ``reviser`` section of the configuration ``corec-kit`` was started with."""
    from corec_plugin_kit.api import get_state

    from .config import ReviserConfig

    config = get_state().kernel().processor_config("reviser")
    return config if isinstance(config, ReviserConfig) else ReviserConfig()


# -- corec-kit reviser review -------------------------------------------------------------------


@click.command("review")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "sarif"]),
    default="text",
    show_default=True,
    help="Output format; sarif is SARIF 2.1.0 for code-scanning tools.",
)
@backend_option
@click.option("--fix", is_flag=True, help="Write the formatted text back to the files.")
@click.option(
    "--exclude",
    multiple=True,
    metavar="PATTERN",
    help="Extra gitignore-style exclude (repeatable).",
)
@click.option("--no-gitignore", is_flag=True, help="Do not skip what .gitignore excludes.")
@click.option(
    "--jobs", type=click.IntRange(0), help="Parallel workers for black+pyflakes (0 = CPUs)."
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress on stderr (default: on a terminal).",
)
@click.option(
    "--diff", "show_diff", is_flag=True, help="Also print the formatter's diffs (text format)."
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    help="Local model for suggestions.",
)
def review(
    paths: tuple[Path, ...],
    fmt: str,
    backend: str | None,
    fix: bool,
    exclude: tuple[str, ...],
    no_gitignore: bool,
    jobs: int | None,
    progress: bool | None,
    show_diff: bool,
    model_path: Path | None,
) -> None:
    """Review Python files: formatting, pyflakes rules, optional model suggestions.

    Exit 0 when clean, 1 when there are findings or files to reformat (after --fix, only
    findings count), 2 on usage errors.
    """
    from .backends import make_backend
    from .files import collect
    from .findings import Review

    config = with_cli_options(reviser_config(), exclude, no_gitignore, jobs)
    chosen = make_backend(config, backend)
    base = Path.cwd()
    found = collect(paths, base, config)
    if not found:
        raise click.UsageError("no Python files under the given paths (after excludes)")
    files = [p for p, _ in found]
    names = [n for _, n in found]
    show = progress if progress is not None else sys.stderr.isatty()
    reviews = review_with_progress(chosen, files, names, show)
    if fix:
        write_fixes(chosen, files, names, reviews, config.max_source_bytes)
    result = Review(backend=chosen.name, files=reviews)
    chosen_model = model_path or config.model_path
    if chosen_model is not None:
        result.suggestions = model_suggestions(chosen_model, files, reviews, config)
    echo_review(result, fmt, base, show_diff)
    if not result.clean:
        sys.exit(1)


def with_cli_options(
    config: ReviserConfig, exclude: tuple[str, ...], no_gitignore: bool, jobs: int | None
) -> ReviserConfig:
    """``config`` with ``--exclude`` (added to its patterns), ``--no-gitignore`` and ``--jobs``."""
    update: dict[str, Any] = {"exclude_patterns": [*config.exclude_patterns, *exclude]}
    if no_gitignore:
        update["respect_gitignore"] = False
    if jobs is not None:
        update["jobs"] = jobs
    return config.model_copy(update=update)


def review_with_progress(
    chosen: Backend, files: list[Path], names: list[str], show: bool
) -> list[FileReview]:
    """Review ``files`` in batches, with a progress bar on stderr when ``show``.

    ``chosen`` is closed afterwards (its worker processes stop); ``--fix`` still calls its
    in-process ``review``.
    """
    reviews: list[FileReview] = []
    step = BATCH_SIZE if len(files) > BATCH_SIZE else len(files)
    sink = sys.stderr if show else cast("TextIO", _Null())
    try:
        with click.progressbar(length=len(files), label="reviewing", file=sink) as bar:
            for start in range(0, len(files), step):
                reviews += chosen.review_files(
                    files[start : start + step], names[start : start + step]
                )
                bar.update(min(step, len(files) - start))
    finally:
        chosen.close()
    return reviews


def write_fixes(
    chosen: Backend, files: list[Path], names: list[str], reviews: list[FileReview], limit: int
) -> None:
    """``--fix``: write the formatted text of each file to reformat, and mark it formatted."""
    from .files import Unreadable, read_source

    for i, item in enumerate(reviews):
        if not item.formatted and item.error is None:
            try:
                source = read_source(files[i], limit)
            except Unreadable:
                continue
            fixed = chosen.review(source, names[i], fix=True)
            if fixed.fixed is not None:
                files[i].write_text(fixed.fixed, encoding="utf-8")
                reviews[i] = item.model_copy(update={"formatted": True, "diff": ""})


def model_suggestions(
    model_path: Path, files: list[Path], reviews: list[FileReview], config: ReviserConfig
) -> list[str]:
    """The local model's suggestions about the first few reviewed files."""
    from .model import ModelUnavailable, prompt_source, suggest

    text = prompt_source(files, reviews, config.max_source_bytes)
    try:
        return suggest(text, model_path, config.model_max_new_tokens)
    except ModelUnavailable as exc:
        # Exit 2, not 1: a model that cannot run is a usage problem, and exit 1 means
        # "findings" to the pipelines that call this command.
        raise click.UsageError(exc.message) from None


def echo_review(result: Review, fmt: str, base: Path, show_diff: bool) -> None:
    """Print ``result`` as ``--format`` asks; text adds the diffs (``--diff``) and suggestions."""
    from .findings import to_json, to_sarif, to_text

    if fmt == "json":
        click.echo(json.dumps(to_json(result), indent=2))
    elif fmt == "sarif":
        click.echo(json.dumps(to_sarif(result, base.resolve().as_uri() + "/"), indent=2))
    else:
        click.echo(to_text(result))
        if show_diff:
            for item in result.files:
                if item.diff:
                    click.echo(item.diff, nl=False)
        for line in result.suggestions or []:
            click.echo(f"suggestion: {line}")


class _Null:
    """A file that swallows the progress bar when it is off."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False


# -- corec-kit reviser revise -------------------------------------------------------------------


@click.command("revise")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@backend_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json prints the same answer as the `revise` action.",
)
def revise(file: Path, backend: str | None, fmt: str) -> None:
    """Format one Python file in place when the formatter changes it (codex's `revise`).

    Prints "Archivo revisado" when the file was rewritten, "Sin cambios" when it was not,
    then its findings. Exit 0 when the file is now formatted (findings do not count), 1 when
    it was not rewritten because it does not parse or a linter crashed, 2 on usage errors
    (not a regular .py/.pyi file, unreadable, too large, not UTF-8).
    """
    import asyncio

    from .backends import make_backend
    from .revise import ReviseFailed, ReviseRefused, revise_file

    config = reviser_config()
    # A symlink is followed to the file it names, which is the one written.
    target = file.resolve()
    name = display_name(target)
    chosen = make_backend(config, backend)
    try:
        answer = asyncio.run(revise_file(chosen, target, name, config.max_source_bytes))
    except ReviseRefused as exc:
        raise click.UsageError(f"cannot revise {name}: {exc}") from None
    except ReviseFailed as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        chosen.close()
    echo_revision(answer, fmt)
    if answer["reason"]:
        sys.exit(1)


def display_name(target: Path) -> str:
    """``target`` relative to the current folder when it is under it, else absolute."""
    try:
        return target.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return target.as_posix()


def echo_revision(answer: dict[str, Any], fmt: str) -> None:
    """Print the answer of ``revise``: JSON, or codex's message, the reason and the findings."""
    if fmt == "json":
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(f"{answer['message']}: {answer['path']}")
    if answer["reason"]:
        click.echo(answer["reason"])
    for f in answer["findings"]:
        click.echo(f"{f['file']}:{f['line']}:{f['column']}: {f['code']} {f['message']}")
