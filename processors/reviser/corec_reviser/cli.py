"""``corec-kit reviser review PATH...`` and ``corec-kit reviser revise FILE``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO, cast

import click


def add_commands(group: click.Group) -> None:
    from corec_plugin_kit.api import get_state

    @group.command("review")
    @click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "json", "sarif"]),
        default="text",
        show_default=True,
        help="Output format; sarif is SARIF 2.1.0 for code-scanning tools.",
    )
    @click.option(
        "--backend", type=click.Choice(["ruff", "black+pyflakes"]), help="Override reviser.backend."
    )
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
        from .config import ReviserConfig
        from .files import Unreadable, collect, read_source
        from .findings import Review, to_json, to_sarif, to_text

        kernel = get_state().kernel()
        config = kernel.processor_config("reviser")
        if not isinstance(config, ReviserConfig):
            config = ReviserConfig()
        update: dict[str, Any] = {"exclude_patterns": [*config.exclude_patterns, *exclude]}
        if no_gitignore:
            update["respect_gitignore"] = False
        if jobs is not None:
            update["jobs"] = jobs
        config = config.model_copy(update=update)
        chosen = make_backend(config, backend)
        base = Path.cwd()
        found = collect(paths, base, config)
        if not found:
            raise click.UsageError("no Python files under the given paths (after excludes)")
        files = [p for p, _ in found]
        names = [n for _, n in found]
        show = progress if progress is not None else sys.stderr.isatty()
        reviews = []
        step = 200 if len(files) > 200 else len(files)
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
        if fix:
            for i, item in enumerate(reviews):
                if not item.formatted and item.error is None:
                    try:
                        source = read_source(files[i], config.max_source_bytes)
                    except Unreadable:
                        continue
                    fixed = chosen.review(source, names[i], fix=True)
                    if fixed.fixed is not None:
                        files[i].write_text(fixed.fixed, encoding="utf-8")
                        reviews[i] = item.model_copy(update={"formatted": True, "diff": ""})
        result = Review(backend=chosen.name, files=reviews)
        if model_path is not None or config.model_path is not None:
            from .model import ModelUnavailable, suggest

            chosen_model = model_path or config.model_path
            assert chosen_model is not None
            texts: list[str] = []
            for path, item in zip(files, reviews, strict=True):
                if item.error is None and len(texts) < 5:
                    try:
                        texts.append(read_source(path, config.max_source_bytes))
                    except Unreadable:
                        continue
            text = "\n".join(texts)
            try:
                result.suggestions = suggest(text, chosen_model, config.model_max_new_tokens)
            except ModelUnavailable as exc:
                # Exit 2, not 1: a model that cannot run is a usage problem, and exit 1 means
                # "findings" to the pipelines that call this command.
                raise click.UsageError(exc.message) from None
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
        if not result.clean:
            sys.exit(1)

    @group.command("revise")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option(
        "--backend", type=click.Choice(["ruff", "black+pyflakes"]), help="Override reviser.backend."
    )
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
        from .config import ReviserConfig
        from .revise import ReviseFailed, ReviseRefused, revise_file

        kernel = get_state().kernel()
        config = kernel.processor_config("reviser")
        if not isinstance(config, ReviserConfig):
            config = ReviserConfig()
        # A symlink is followed to the file it names, which is the one written.
        target = file.resolve()
        try:
            name = target.relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:
            name = target.as_posix()
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
        if fmt == "json":
            click.echo(json.dumps(answer, indent=2))
        else:
            click.echo(f"{answer['message']}: {answer['path']}")
            if answer["reason"]:
                click.echo(answer["reason"])
            for f in answer["findings"]:
                click.echo(f"{f['file']}:{f['line']}:{f['column']}: {f['code']} {f['message']}")
        if answer["reason"]:
            sys.exit(1)


class _Null:
    """A file that swallows the progress bar when it is off."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False
