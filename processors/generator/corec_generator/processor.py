"""The generator processor: actions ``generate_plugin`` and ``generate_website``, config; its
commands (``corec-kit generator``) are in :mod:`corec_generator.cli`.

Where files may go depends on who asks (docs/generator.md):

* a **command** (stream, ``corec-kit exec``, the CoreC adapter) writes only below the configured
  ``output_plugins`` / ``output_websites`` root; its ``output`` is a path relative to that root;
* the **CLI** (``corec-kit generator plugin NAME --output DIR``) writes below any folder the user
  names, because the user typing it is the one who owns that folder.

``generate_plugin`` writes one of two kinds of plugin: ``processor`` (a pip-installable package
for this kit) or ``corec`` (a folder in the layout of CoreC's plugin guide, ``plugins/<name>/``
with ``main.py`` and its ``inicializar``). Without ``kind``, a command's wire decides: commands
that came over CoreC codex's wire get ``corec``, the kit's own get ``processor``.

Both go through the same validation (every problem reported at once) and the same sandboxed
writer in :mod:`corec_generator.paths`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from corec_plugin_kit import CommandContext, InvalidParams, hookimpl
from corec_plugin_kit import __version__ as kit_version

from . import __version__
from .paths import camel, check_name, check_relative, pascal, slug, snake

if TYPE_CHECKING:
    import click

    # jinja2 is imported on first generation, not when the kernel loads this processor
    # (`corec-kit list-processors` and every worker start import this module).
    from .engine import Job

TEMPLATE_DIRS = {"plugin": "plugin", "react": "react_app", "fastapi": "fastapi_app"}
#: generate_plugin's ``kind`` -> its template set.
PLUGIN_KINDS = {"processor": "plugin", "corec": "corec_plugin"}
#: The template sets a ``templates_dir`` may hold (a subfolder replaces the bundled set).
TEMPLATE_SETS = ("plugin", "corec_plugin", "react_app", "fastapi_app")
#: Answers that only the processor kind uses (left out of a corec plugin's answers file).
PROCESSOR_ONLY = ("with_cli", "with_config", "license")
#: Modules of CoreC's own ``plugins`` package: a plugin folder of that name would shadow them.
COREC_PLUGINS_MODULES = frozenset({"registry"})
_TEXT = re.compile(r"[^\x00-\x1f\x7f]*")


def _one_line(value: str | None) -> str | None:
    # Answers land in TOML, JSON, Python and Markdown: one printable line keeps every one of
    # them well-formed (templates still escape with |tojson where it matters).
    if value is not None and not _TEXT.fullmatch(value):
        raise ValueError("must be one line without control characters")
    return value


def _not_a_folder(path: Path) -> Path | None:
    """The first existing path on the way to ``path`` (itself included) that is not a folder,
    or ``None`` when ``path`` is a folder or can be created as one."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def _refuse(problems: list[dict[str, str]]) -> None:
    if problems:
        raise PydanticCustomError(problems[0]["type"], problems[0]["msg"])


def _valid_name(value: str, info: ValidationInfo) -> str:
    # Checked in the params model so that pydantic reports it together with every other
    # problem of the command, before the handler (and anything it writes) runs.
    _refuse(check_name(value, str(info.field_name)))
    return value


def _valid_output(value: str | None) -> str | None:
    _refuse(check_relative(value)[1])
    return value


def _valid_globs(value: list[str], info: ValidationInfo) -> list[str]:
    for pattern in value:
        _refuse(_glob_problems(pattern, str(info.field_name)))
    return value


class GeneratorConfig(BaseModel):
    """The ``generator`` config section (key names from the original CoreC plugin guide)."""

    model_config = ConfigDict(extra="forbid")

    templates_dir: Path | None = Field(
        None,
        description="folder with plugin/, react_app/, fastapi_app/ overriding the bundled ones",
    )
    output_plugins: Path = Field(
        Path("plugins"), description="root that generate_plugin commands write below"
    )
    output_websites: Path = Field(
        Path("websites"), description="root that generate_website commands write below"
    )
    exclude_patterns: list[str] = Field(
        default_factory=list,
        description="gitignore lines: generated paths they select are never written",
    )

    _globs = field_validator("exclude_patterns")(_valid_globs)

    def config_warnings(self) -> list[str]:
        """Settings that are valid but will not do what they seem to (``corec-kit check`` shows
        them; ``--strict`` makes them errors): each starts with the key it is about."""
        warnings: list[str] = []
        if self.templates_dir is not None:
            where = self.templates_dir
            bundled = "the bundled templates are used"
            if not where.exists():
                warnings.append(f"templates_dir: {where} does not exist; {bundled}")
            elif not where.is_dir():
                warnings.append(f"templates_dir: {where} is not a folder; {bundled}")
            elif not any((where / name).is_dir() for name in TEMPLATE_SETS):
                names = ", ".join(f"{name}/" for name in TEMPLATE_SETS)
                warnings.append(f"templates_dir: {where} holds none of {names}; {bundled}")
        for key in ("output_plugins", "output_websites"):
            blocked = _not_a_folder(getattr(self, key))
            if blocked is not None:
                warnings.append(
                    f"{key}: {blocked} is not a folder, so nothing can be written below "
                    f"{getattr(self, key)}"
                )
        return warnings


class GeneratePluginParams(BaseModel):
    """Params of ``generate_plugin``; everything but output/force/dry_run is an answer."""

    model_config = ConfigDict(extra="forbid")

    # kind comes first: plugin_name's validator checks a corec plugin's name against it.
    kind: Literal["processor", "corec"] | None = Field(
        None,
        description="processor (a kit package) or corec (a CoreC plugins/<name>/ folder); "
        "none: corec for commands over codex's wire, else processor",
    )
    plugin_name: str = Field(
        min_length=1, max_length=64, description="processor or CoreC plugin name"
    )
    description: str | None = Field(None, max_length=200)
    author: str | None = Field(None, max_length=100)
    output: str | None = Field(None, description="folder below generator.output_plugins")
    force: bool = Field(False, description="overwrite files that exist")
    dry_run: bool = Field(False, description="return the planned files, write nothing")
    with_cli: bool = Field(True, description="include a `corec-kit <name>` command group")
    with_config: bool = Field(True, description="include a config section model")
    license: Literal["MIT", "Apache-2.0", "none"] = "MIT"
    skip_if_exists: list[str] = Field(
        default_factory=list, description="globs of files kept as they are when they exist"
    )

    _one_line = field_validator("description", "author")(_one_line)
    _output = field_validator("output")(_valid_output)
    _globs = field_validator("skip_if_exists")(_valid_globs)

    @field_validator("plugin_name")
    @classmethod
    def _plugin_name(cls, value: str, info: ValidationInfo) -> str:
        _valid_name(value, info)
        if info.data.get("kind") == "corec":
            _refuse(_corec_name_problems(value))
        return value


class GenerateWebsiteParams(BaseModel):
    """Params of ``generate_website``; everything but output/force/dry_run is an answer."""

    model_config = ConfigDict(extra="forbid")

    template: Literal["react", "fastapi"]
    project_name: str = Field(min_length=1, max_length=64)
    description: str | None = Field(None, max_length=200)
    author: str | None = Field(None, max_length=100)
    output: str | None = Field(None, description="folder below generator.output_websites")
    force: bool = False
    dry_run: bool = False
    with_tests: bool = Field(True, description="include tests (pytest or Vitest)")
    with_docker: bool = Field(False, description="include a Dockerfile")
    with_cors: bool = Field(False, description="FastAPI only: allow cross-origin requests")
    skip_if_exists: list[str] = Field(default_factory=list)

    _one_line = field_validator("description", "author")(_one_line)
    _name = field_validator("project_name")(_valid_name)
    _output = field_validator("output")(_valid_output)
    _globs = field_validator("skip_if_exists")(_valid_globs)

    @field_validator("with_cors")
    @classmethod
    def _cors_for_fastapi(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("template") != "fastapi":
            raise PydanticCustomError("option", "applies to the fastapi template only")
        return value


_NOT_ANSWERS = {"output", "force", "dry_run", "skip_if_exists"}


def _answers(params: BaseModel) -> dict[str, Any]:
    return params.model_dump(mode="json", exclude=_NOT_ANSWERS)


def _config(config: BaseModel | None) -> GeneratorConfig:
    if isinstance(config, GeneratorConfig):
        return config
    return GeneratorConfig.model_validate({})


def _raise(problems: list[dict[str, str]], action: str) -> None:
    if problems:
        summary = "; ".join(f"{p['loc']}: {p['msg']}" for p in problems[:5])
        raise InvalidParams(f"invalid params for {action!r}: {summary}", details=problems)


def _meta() -> dict[str, Any]:
    return {"_kit_version": kit_version, "_generator_version": __version__}


def plugin_kind(params: GeneratePluginParams, wire: str | None = None) -> str:
    """The kind to generate: the ``kind`` param, else by wire (``codex`` -> ``corec``)."""
    if params.kind is not None:
        return params.kind
    return "corec" if wire == "codex" else "processor"


def _corec_name_problems(value: str) -> list[dict[str, str]]:
    # CoreC imports plugins.<name>.main and keys nucleus.plugins by that name: the folder name
    # must already be the package name (names are validated, never transformed).
    package = snake(value)
    if value != package:
        return [
            {
                "loc": "plugin_name",
                "msg": f"a CoreC plugin is imported as plugins.<name>.main: name it {package!r}",
                "type": "name_corec",
            }
        ]
    if package in COREC_PLUGINS_MODULES:
        return [
            {
                "loc": "plugin_name",
                "msg": f"{package!r} would shadow CoreC's plugins.{package}; pick another name",
                "type": "name_taken",
            }
        ]
    return []


def plugin_job(
    params: GeneratePluginParams,
    config: GeneratorConfig,
    root: Path,
    output: list[str],
    problems: list[dict[str, str]] | None = None,
    *,
    wire: str | None = None,
) -> Job:
    """Validate (all problems at once, with ``problems`` found earlier) and build the job.

    ``wire`` is how the command arrived (``ctx.wire``); it picks the kind when ``kind`` is
    not given.
    """
    from .engine import Job, template_set

    kind = plugin_kind(params, wire)
    name_problems = check_name(params.plugin_name, "plugin_name")
    if kind == "corec" and not name_problems:
        name_problems = _corec_name_problems(params.plugin_name)
    problems = [*(problems or []), *name_problems]
    for pattern in params.skip_if_exists:
        problems += _glob_problems(pattern, "skip_if_exists")
    _raise(problems, "generate_plugin")
    name = snake(params.plugin_name)
    class_name = pascal(name)
    answers = {**_answers(params), "kind": kind}
    if kind == "corec":
        for key in PROCESSOR_ONLY:
            answers.pop(key, None)
    context = {
        **answers,
        "description": params.description
        or (f"A CoreC plugin: {name}." if kind == "corec" else f"A CoreC processor: {name}."),
        "author": params.author or "CoreC developers",
        "name": name,
        "package": name,
        "dist_name": slug(name) if name.startswith("corec_") else f"corec-{slug(name)}",
        "class_name": class_name,
        "plugin_class": class_name if class_name.endswith("Plugin") else f"{class_name}Plugin",
        "action": f"{name}.hello",
        "has_license": params.license != "none",
        "kit_version": kit_version,
        "kit_requirement": kit_requirement(kit_version),
        "generator_version": __version__,
    }
    return Job(
        tset=template_set(PLUGIN_KINDS[kind], config.templates_dir),
        context=context,
        answers=answers,
        root=root,
        project=(*output, params.plugin_name),
        force=params.force,
        dry_run=params.dry_run,
        skip_if_exists=params.skip_if_exists,
        exclude=config.exclude_patterns,
        meta=_meta(),
    )


def kit_requirement(version: str) -> str:
    """What a generated processor requires of the kit: its compatible minor while the kit is
    0.x (``corec-plugin-kit>=0.1,<0.2``), its major from 1.0 (``>=1.2,<2``)."""
    parts = [int(p) for p in version.split(".")[:2] if p.isdigit()]
    major, minor = [*parts, 0, 0][:2]
    upper = f"{major}.{minor + 1}" if major == 0 else f"{major + 1}"
    return f"corec-plugin-kit>={major}.{minor},<{upper}"


def website_job(
    params: GenerateWebsiteParams,
    config: GeneratorConfig,
    root: Path,
    output: list[str],
    problems: list[dict[str, str]] | None = None,
) -> Job:
    """Validate (all problems at once, with ``problems`` found earlier) and build the job."""
    from .engine import Job, template_set

    problems = [*(problems or []), *check_name(params.project_name, "project_name")]
    if params.with_cors and params.template != "fastapi":
        problems.append(
            {"loc": "with_cors", "msg": "applies to the fastapi template only", "type": "option"}
        )
    for pattern in params.skip_if_exists:
        problems += _glob_problems(pattern, "skip_if_exists")
    _raise(problems, "generate_website")
    answers = _answers(params)
    context = {
        **answers,
        "description": params.description or f"{params.project_name}, generated by corec-kit.",
        "author": params.author or "CoreC developers",
        "package": snake(params.project_name),
        "npm_name": slug(params.project_name),
        "component": pascal(params.project_name),
        "js_name": camel(params.project_name),
        "kit_version": kit_version,
        "generator_version": __version__,
    }
    return Job(
        tset=template_set(TEMPLATE_DIRS[params.template], config.templates_dir),
        context=context,
        answers=answers,
        root=root,
        project=(*output, params.project_name),
        force=params.force,
        dry_run=params.dry_run,
        skip_if_exists=params.skip_if_exists,
        exclude=config.exclude_patterns,
        meta=_meta(),
    )


def _glob_problems(pattern: str, loc: str) -> list[dict[str, str]]:
    """Why ``pattern`` is not a usable gitignore line (docs/generator.md, "Globs")."""
    from .globs import glob_problem

    why = glob_problem(pattern)
    if why is not None:
        return [{"loc": loc, "msg": why, "type": "glob"}]
    return []


def generate_plugin(params: GeneratePluginParams, ctx: CommandContext) -> dict[str, Any]:
    """Write a processor package or a CoreC plugin folder (below output_plugins).

    Without ``kind``, the command's wire decides: ``corec`` over codex's, else ``processor``.
    """
    from .engine import generate

    config = _config(ctx.config)
    output, problems = check_relative(params.output)
    wire = getattr(ctx, "wire", "kit")
    return generate(plugin_job(params, config, config.output_plugins, output, problems, wire=wire))


def generate_website(params: GenerateWebsiteParams, ctx: CommandContext) -> dict[str, Any]:
    """Write a React (Vite) or FastAPI site from its template (below output_websites)."""
    from .engine import generate

    config = _config(ctx.config)
    output, problems = check_relative(params.output)
    return generate(website_job(params, config, config.output_websites, output, problems))


@hookimpl
def corec_config_model() -> type[BaseModel]:
    return GeneratorConfig


@hookimpl
def corec_register_actions(register: Any) -> None:
    # Rendering and writing are blocking file work: run in the kernel's thread pool.
    register(
        "generate_plugin",
        generate_plugin,
        GeneratePluginParams,
        blocking=True,
        description="Write a processor package or a CoreC plugin folder (kind)",
    )
    register(
        "generate_website",
        generate_website,
        GenerateWebsiteParams,
        blocking=True,
        description="Write a React (Vite) or FastAPI site from its template",
    )


# --------------------------------------------------------------------------- CLI


@hookimpl
def corec_cli(group: click.Group) -> None:
    # `corec-kit generator plugin|site`: corec_generator/cli.py, imported only when it is used.
    from .cli import add_commands

    add_commands(group)
