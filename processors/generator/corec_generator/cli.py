"""``corec-kit generator plugin NAME`` and ``corec-kit generator site TEMPLATE NAME``.

The processor's ``corec_cli`` hook (:mod:`corec_generator.processor`) adds these commands to its
group, so this module loads only when the user runs ``corec-kit generator``, and the templates
(jinja2) only when a command runs. Unlike a command on the stream, the CLI writes below any
folder the user names with ``--output`` (see the processor's docstring).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import BaseModel, ValidationError

from corec_plugin_kit import InvalidCommand
from corec_plugin_kit.api import echo_json, invalid_params, pass_kernel

from . import ANSWERS_FILE
from .processor import (
    PLUGIN_KINDS,
    TEMPLATE_DIRS,
    GeneratePluginParams,
    GenerateWebsiteParams,
    _config,
    plugin_job,
    website_job,
)

F = TypeVar("F", bound=Callable[..., Any])


def add_commands(group: click.Group) -> None:
    """Add ``plugin`` and ``site`` to the ``corec-kit generator`` group."""
    group.add_command(plugin_cmd)
    group.add_command(site_cmd)


def load_answers(path: str, template: str | tuple[str, ...]) -> dict[str, Any]:
    """Answers from an answers file written by an earlier run, checked against ``template``
    (one template set's name, or a tuple of the names accepted)."""
    try:
        doc = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidCommand(f"cannot read answers file {path}: {exc}") from None
    answers = doc.get("answers") if isinstance(doc, dict) else None
    if not isinstance(answers, dict):
        raise InvalidCommand(f"{path} is not an answers file (no 'answers' object)")
    accepted = (template,) if isinstance(template, str) else template
    if doc.get("_template") not in accepted:
        wanted = " or ".join(repr(name) for name in accepted)
        raise InvalidCommand(
            f"{path} holds answers for template {doc.get('_template')!r}, not {wanted}"
        )
    if doc.get("_template") == PLUGIN_KINDS["corec"]:
        answers.setdefault("kind", "corec")
    return answers


def _validate(model: type[BaseModel], data: dict[str, Any], action: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_params(exc, action) from None


def _merged(
    answers_file: str | None, template: str | tuple[str, ...], given: dict[str, Any]
) -> dict[str, Any]:
    """The answers file's answers (if any), overridden by the flags given."""
    data = load_answers(answers_file, template) if answers_file else {}
    data.update({k: v for k, v in given.items() if v is not None})
    return data


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(result)
        return
    verb = "would write" if result["dry_run"] else "wrote"
    for item in result["files"]:
        click.echo(f"  {item['action']:<9} {item['path']}")
    click.echo(
        f"{verb} {result['created'] + result['overwritten']} file(s) "
        f"({result['skipped']} kept) in {result['project_dir']}"
    )


common_options = [
    click.option(
        "--output",
        "-o",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("."),
        show_default=True,
        help="Folder to create the project in (any folder you choose).",
    ),
    click.option("--description", help="One-line description."),
    click.option("--author", help="Author name."),
    click.option("--force", is_flag=True, help="Overwrite files that exist."),
    click.option("--dry-run", is_flag=True, help="List the files, write nothing."),
    click.option(
        "--skip-if-exists", multiple=True, metavar="GLOB", help="Keep these files if present."
    ),
    click.option(
        "--answers",
        "answers_file",
        type=click.Path(dir_okay=False, exists=True),
        help=f"Reuse the answers of an earlier run ({ANSWERS_FILE}); flags override them.",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
]


def with_common_options(func: F) -> F:
    """The options ``plugin`` and ``site`` share (output folder, answers, write mode, JSON)."""
    for option in reversed(common_options):
        func = option(func)
    return func


@click.command("plugin")
@click.argument("name", required=False)
@with_common_options
@click.option(
    "--kind",
    type=click.Choice(sorted(PLUGIN_KINDS)),
    default=None,
    help="processor: a kit package; corec: a CoreC plugins/<name>/ folder. [default: processor]",
)
@click.option("--with-cli/--without-cli", default=None, help="Add a CLI group. [default: with]")
@click.option(
    "--with-config/--without-config",
    default=None,
    help="Add a config section model. [default: with]",
)
@click.option(
    "--license",
    type=click.Choice(["MIT", "Apache-2.0", "none"]),
    default=None,
    help="LICENSE file to add. [default: MIT]",
)
@pass_kernel
def plugin_cmd(
    kernel: Any,
    name: str | None,
    output: Path,
    answers_file: str | None,
    as_json: bool,
    **given: Any,
) -> None:
    """Create a processor package NAME (a pip-installable corec.processors plugin), or
    with --kind corec a CoreC plugin folder NAME (main.py with inicializar, config.json).

    \b
    Example:
      corec-kit generator plugin weather --output ~/src
      corec-kit generator plugin weather --kind corec --output ~/corec/plugins
    """
    from .engine import generate

    data = _merged(answers_file, tuple(PLUGIN_KINDS.values()), {"plugin_name": name, **given})
    data["skip_if_exists"] = list(given.get("skip_if_exists") or ())
    data.setdefault("kind", "processor")
    if "plugin_name" not in data:
        raise click.UsageError("give NAME, or --answers FILE")
    params = _validate(GeneratePluginParams, data, "generate_plugin")
    config = _config(kernel.processor_config("generator"))
    _report(generate(plugin_job(params, config, output, [])), as_json)


@click.command("site")
@click.argument("template", type=click.Choice(["react", "fastapi"]))
@click.argument("name", required=False)
@with_common_options
@click.option("--with-tests/--without-tests", default=None, help="Add tests. [default: with]")
@click.option(
    "--with-docker/--without-docker", default=None, help="Add a Dockerfile. [default: without]"
)
@click.option(
    "--with-cors/--without-cors",
    default=None,
    help="FastAPI only: allow cross-origin requests. [default: without]",
)
@pass_kernel
def site_cmd(
    kernel: Any,
    template: str,
    name: str | None,
    output: Path,
    answers_file: str | None,
    as_json: bool,
    **given: Any,
) -> None:
    """Create a website NAME from the react (Vite) or fastapi template.

    \b
    Example:
      corec-kit generator site fastapi shop --output ~/src
    """
    from .engine import generate

    tdir = TEMPLATE_DIRS[template]
    data = _merged(answers_file, tdir, {"project_name": name, **given})
    data["template"] = template
    data["skip_if_exists"] = list(given.get("skip_if_exists") or ())
    if "project_name" not in data:
        raise click.UsageError("give NAME, or --answers FILE")
    params = _validate(GenerateWebsiteParams, data, "generate_website")
    config = _config(kernel.processor_config("generator"))
    _report(generate(website_job(params, config, output, [])), as_json)
