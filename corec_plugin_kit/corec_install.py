"""``corec-kit corec install``: write what a CoreC tree's plugin loader needs to load the kit.

Two CoreC loaders exist (docs/corec.md):

* **registry** (CoreC's current tree, ``plugins/registry.py``): ``load_plugin`` imports
  ``plugins.<name>.main`` and awaits its ``inicializar(nucleus, config)``, ``config`` being the
  plugin's entry in CoreC's config merged with ``<name>`` of the JSON file its ``path`` names.
  Written: ``plugins/<name>/__init__.py``, ``plugins/<name>/main.py`` (re-exports the kit's
  :func:`corec_plugin_kit.corec_adapter.inicializar`) and ``plugins/<name>/config.json``.
* **v4** (``src/plugins/plugin_manager.py``): ``PluginManager.cargar_plugins`` reads every
  ``src/plugins/*/plugin.json``, loads ``configs/plugins / config_file`` as YAML, constructs
  ``main_class(config=, redis_client=, db_config=)`` and awaits ``inicializar(nucleus)``.
  Written: ``src/plugins/<name>/plugin.json`` and ``configs/plugins/<name>/<name>.yaml`` (JSON
  text, which YAML reads as is).

Nothing is overwritten without ``--force`` and nothing is written outside the CoreC root: every
target is resolved (symlinks followed) and must stay inside it, and a target that is itself a
symlink is refused.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click

Layout = Literal["registry", "v4"]
DEFAULT_NAME = "corec_kit"
MAIN_CLASS = "corec_plugin_kit.corec_adapter.CorecKitPlugin"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class InstallError(click.ClickException):
    """Refused: nothing was written."""


@dataclass(frozen=True)
class Plan:
    """What ``install`` writes: ``files`` maps paths relative to ``base`` to their text."""

    layout: Layout
    root: Path
    base: Path  # the root, or root/corec_v4 for the v4 tree kept in that folder
    files: dict[str, str]
    snippet: str


def detect_layout(root: Path) -> tuple[Layout, Path]:
    """``(layout, base)`` of a CoreC tree; raises :class:`InstallError` when it is neither."""
    if (root / "plugins" / "registry.py").is_file():
        return "registry", root
    for base in (root, root / "corec_v4"):
        if (base / "src" / "plugins" / "plugin_manager.py").is_file():
            return "v4", base
    raise InstallError(
        f"{root} is not a CoreC tree: found neither plugins/registry.py (registry loader) nor "
        "src/plugins/plugin_manager.py (CoreC v4); pass --layout to choose"
    )


def _base_for(root: Path, layout: Layout) -> Path:
    if layout == "v4" and not (root / "src").exists() and (root / "corec_v4" / "src").is_dir():
        return root / "corec_v4"
    return root


def _json(data: object) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def registry_files(name: str, streams: dict[str, str]) -> tuple[dict[str, str], str]:
    main = (
        f'"""CoreC plugin {name!r}: the corec-plugin-kit kernel (written by `corec-kit corec '
        "install`).\n\n"
        "CoreC's plugins/registry.py imports this module and awaits "
        "inicializar(nucleus, config).\n"
        '"""\n\n'
        "from corec_plugin_kit.corec_adapter import inicializar\n\n"
        '__all__ = ["inicializar"]\n'
    )
    config = {name: {"name": name, **streams}}
    files = {
        f"plugins/{name}/__init__.py": f'"""CoreC plugin {name!r} (corec-plugin-kit)."""\n',
        f"plugins/{name}/main.py": main,
        f"plugins/{name}/config.json": _json(config),
    }
    entry = {name: {"enabled": True, "path": f"plugins/{name}/config.json"}}
    snippet = (
        'Enable it in CoreC\'s config/corec_config.json, under "plugins":\n'
        + _json(entry).strip()[1:-1].strip("\n")
        + "\n"
    )
    return files, snippet


def v4_files(
    name: str, streams: dict[str, str], channels: list[str], version: str
) -> tuple[dict[str, str], str]:
    # plugin_manager.py loads `self.config_dir / config["config_file"]` with config_dir
    # "configs/plugins": config_file is relative to configs/plugins, not to the tree.
    manifest = {
        "name": name,
        "version": version,
        "description": "corec-plugin-kit kernel: routes command envelopes to its processors",
        "type": "processor",
        "channels": channels,
        "dependencies": ["corec-plugin-kit"],
        "config_file": f"{name}/{name}.yaml",
        "main_class": MAIN_CLASS,
        "critical": False,
    }
    config = {"name": name, "channels": channels, **streams}
    files = {
        f"src/plugins/{name}/plugin.json": _json(manifest),
        f"configs/plugins/{name}/{name}.yaml": _json(config),
    }
    snippet = (
        "CoreC v4 loads every src/plugins/*/plugin.json when its nucleus starts: nothing to "
        "enable.\n"
        f"nucleus.get_procesador(channel) returns it for the channels {', '.join(channels)} "
        f"(edit configs/plugins/{name}/{name}.yaml to change them).\n"
    )
    return files, snippet


def plan(
    root: Path,
    *,
    name: str = DEFAULT_NAME,
    layout: str = "auto",
    channels: tuple[str, ...] = (),
    stream_in: str | None = None,
    stream_out: str | None = None,
) -> Plan:
    """What :func:`install` would write (nothing is touched)."""
    from . import __version__

    if not _NAME.match(name):
        raise click.BadParameter(
            f"{name!r} is not a Python identifier (CoreC imports plugins.<name>.main)",
            param_hint="--name",
        )
    if not root.is_dir():
        raise InstallError(f"{root} is not a directory")
    if layout == "auto":
        found, base = detect_layout(root)
    elif layout in ("registry", "v4"):
        found = "registry" if layout == "registry" else "v4"
        base = _base_for(root, found)
    else:  # pragma: no cover - click.Choice guards it
        raise click.BadParameter(f"unknown layout {layout!r}", param_hint="--layout")
    streams = {
        key: value for key, value in (("stream_in", stream_in), ("stream_out", stream_out)) if value
    }
    if found == "registry":
        files, snippet = registry_files(name, streams)
    else:
        files, snippet = v4_files(name, streams, list(channels) or [name], __version__)
    return Plan(found, root, base, files, snippet)


def _inside(root: Path, target: Path) -> Path:
    """``target`` checked: not a symlink, and inside ``root`` once every link is resolved.

    Resolving follows links in the folders on the way too (a ``plugins/`` linked elsewhere).
    """
    if target.is_symlink():
        raise InstallError(f"{target} is a symlink: refusing to write through it")
    resolved = target.resolve()
    if not resolved.is_relative_to(root):
        raise InstallError(f"{target} resolves to {resolved}, outside the CoreC root {root}")
    return resolved


def _write(path: Path, text: str) -> None:
    """Write atomically: a temporary file beside it, renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # plain source and config files, world-readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install(the_plan: Plan, *, force: bool = False) -> list[Path]:
    """Write the plan's files; returns their paths. Checks everything before writing anything."""
    root = the_plan.root.resolve()
    targets: list[tuple[Path, str]] = []
    existing: list[str] = []
    for rel, text in the_plan.files.items():
        target = the_plan.base / rel
        resolved = _inside(root, target)
        if target.exists():
            existing.append(str(target))
        targets.append((resolved, text))
    if existing and not force:
        raise InstallError(
            "already there (pass --force to overwrite): " + ", ".join(sorted(existing))
        )
    written = []
    for target, text in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        _write(target, text)
        written.append(target)
    return written


@click.group("corec")
def corec() -> None:
    """Install the kit as a plugin into a CoreC tree."""


@corec.command("install")
@click.argument("corec_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", default=DEFAULT_NAME, show_default=True, help="plugin name in CoreC")
@click.option(
    "--layout",
    type=click.Choice(["auto", "registry", "v4"]),
    default="auto",
    show_default=True,
    help="which CoreC loader (auto: plugins/registry.py or src/plugins/plugin_manager.py)",
)
@click.option(
    "--channel",
    "channels",
    multiple=True,
    help="v4: a channel nucleus.get_procesador routes to the kit (repeatable; default NAME)",
)
@click.option("--stream-in", help="run the kit's stream worker inside CoreC on this stream")
@click.option("--stream-out", help="its default reply stream")
@click.option("--force", is_flag=True, help="overwrite files already there")
def install_command(
    corec_root: Path,
    name: str,
    layout: str,
    channels: tuple[str, ...],
    stream_in: str | None,
    stream_out: str | None,
    force: bool,
) -> None:
    """Write the files CoreC's plugin loader needs to load the kit, then print how to enable it.

    COREC_ROOT is the CoreC checkout (the folder CoreC runs from). Files already there are kept
    unless --force; nothing is written outside COREC_ROOT.
    """
    the_plan = plan(
        corec_root,
        name=name,
        layout=layout,
        channels=channels,
        stream_in=stream_in,
        stream_out=stream_out,
    )
    for path in install(the_plan, force=force):
        click.echo(f"wrote {path}")
    click.echo(f"layout: {the_plan.layout}")
    click.echo(the_plan.snippet, nl=False)


__all__ = ["DEFAULT_NAME", "InstallError", "Plan", "corec", "detect_layout", "install", "plan"]
