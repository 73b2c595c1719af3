"""Template sets and generation: render a plan, check it against the disk, then write it.

A template set is a folder (``plugin/``, ``react_app/``, ``fastapi_app/``) holding the project's
files plus a ``template.json`` manifest. Files ending in ``.jinja`` are rendered (the suffix is
dropped); others are copied byte for byte. ``{{ name }}`` in a file or folder name is replaced
by that answer (no filters or expressions there, so a path can hold nothing but an answer that
the sanitizer already validated).

The manifest is data, never code (copier's tasks and cookiecutter's hooks have no equivalent)::

    {"conditional": {"LICENSE.jinja": "license"},   # source path glob -> answer that must be
                                                    # truthy ("not x" for falsy)
     "skip_if_exists": ["README.md"],               # destination globs kept when they exist
     "exclude": ["**/*.orig"]}                      # destination globs never generated

Every glob is a gitignore line, decided as ``git check-ignore`` decides it (:mod:`.globs`).

Each template set owns one Jinja2 environment for the life of the process (sandboxed,
``StrictUndefined``, a fixed set of filters); its compiled templates and the file listing are
cached, so a warm ``generate_plugin`` costs little more than the renders and writes themselves.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from corec_plugin_kit import HandlerError

from . import ANSWERS_FILE
from .globs import GlobError, glob_problem, globs, matches
from .paths import (
    OutputEscapeError,
    OutputExistsError,
    Sandbox,
    camel,
    check_template_path,
    pascal,
    slug,
    snake,
)

MANIFEST = "template.json"
TEMPLATE_SUFFIX = ".jinja"
#: Never generated, whatever the template folder holds (editor and build droppings).
DEFAULT_EXCLUDES = (
    "**/__pycache__/**",
    "**/*.pyc",
    "**/.DS_Store",
    "**/node_modules/**",
    "**/*.swp",
)
#: The only filters templates get (beside Jinja2's built-ins such as ``tojson``).
FILTERS: dict[str, Callable[[str], str]] = {
    "snake": snake,
    "camel": camel,
    "pascal": pascal,
    "slug": slug,
}
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class TemplateSetError(HandlerError):
    """A template set is missing, malformed, or a template failed to render."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of a template set, as listed once when the set is loaded."""

    src: str
    dest: tuple[str, ...]
    render: bool
    when: str | None


@dataclass(slots=True)
class PlannedFile:
    """A file the generator means to write: its path below the project folder and its bytes."""

    path: str
    parts: tuple[str, ...]
    data: bytes
    action: str = "create"  # create | overwrite | skip


class TemplateSet:
    """A template folder with its long-lived Jinja2 environment and cached compiled templates.

    Get one with :func:`template_set` (cached per folder) rather than constructing it: the
    point is that the environment, the listing and the compiled templates outlive a command.
    """

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        manifest_path = root / MANIFEST
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text("utf-8"))
        except FileNotFoundError:
            self.manifest = {}
        except (OSError, ValueError) as exc:
            raise TemplateSetError(
                f"template manifest {manifest_path} is unreadable: {exc}"
            ) from None
        self.conditional: dict[str, str] = dict(self.manifest.get("conditional", {}))
        self.skip_if_exists: tuple[str, ...] = tuple(self.manifest.get("skip_if_exists", ()))
        self.exclude: tuple[str, ...] = DEFAULT_EXCLUDES + tuple(self.manifest.get("exclude", ()))
        self._check_globs(manifest_path)
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(root)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # the set is loaded once per process; restart to pick up edits
            cache_size=-1,
        )
        self.env.filters.update(FILTERS)
        self.entries = self._list()
        self._compiled: dict[str, jinja2.Template] = {}
        self._raw: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def _check_globs(self, manifest_path: Path) -> None:
        """Refuse a manifest whose globs are not gitignore lines (every problem at once)."""
        problems = [
            f"{key} {pattern!r}: {why}"
            for key, patterns in (
                ("skip_if_exists", self.skip_if_exists),
                ("exclude", self.exclude),
                ("conditional", tuple(self.conditional)),
            )
            for pattern in patterns
            if (why := glob_problem(pattern)) is not None
        ]
        problems += [
            f"conditional {pattern!r}: a negated pattern selects no file; name the files instead"
            for pattern in self.conditional
            if pattern.startswith("!")
        ]
        if problems:
            raise TemplateSetError(
                f"template manifest {manifest_path} has unusable globs: " + "; ".join(problems),
                details={"template": self.name, "problems": problems},
            )

    def _list(self) -> list[Entry]:
        if not self.root.is_dir():
            raise TemplateSetError(f"template folder {self.root} does not exist")
        entries = []
        for path in sorted(self.root.rglob("*")):
            if path.is_dir():
                continue
            src = path.relative_to(self.root).as_posix()
            if src == MANIFEST:
                continue
            render = src.endswith(TEMPLATE_SUFFIX)
            dest = src[: -len(TEMPLATE_SUFFIX)] if render else src
            # the first key whose pattern selects the source file gives its condition
            when = next(
                (cond for pattern, cond in self.conditional.items() if matches(src, (pattern,))),
                None,
            )
            entries.append(Entry(src, tuple(dest.split("/")), render, when))
        return entries

    def _template(self, src: str) -> jinja2.Template:
        tpl = self._compiled.get(src)
        if tpl is None:
            with self._lock:
                tpl = self._compiled.get(src)
                if tpl is None:
                    tpl = self.env.get_template(src)
                    self._compiled[src] = tpl
        return tpl

    def _bytes(self, src: str) -> bytes:
        data = self._raw.get(src)
        if data is None:
            data = (self.root / src).read_bytes()
            self._raw[src] = data
        return data

    def render(self, context: Mapping[str, Any], exclude: Sequence[str] = ()) -> list[PlannedFile]:
        """Render every file that applies to ``context`` (conditions, excludes) in memory."""
        planned = []
        try:
            excluded = globs((*self.exclude, *exclude))
        except GlobError as exc:
            raise TemplateSetError(f"exclude_patterns: {exc}") from None
        for entry in self.entries:
            if entry.when is not None and not _condition(entry.when, context, entry.src):
                continue
            parts = tuple(_fill(part, context, entry.src) for part in entry.dest)
            why = check_template_path(parts)
            if why is not None:
                raise TemplateSetError(
                    f"template file {entry.src!r} renders to an unsafe path: {why}"
                )
            path = "/".join(parts)
            if excluded.match(path):
                continue
            if entry.render:
                try:
                    text = self._template(entry.src).render(context)
                except jinja2.TemplateError as exc:
                    where = getattr(exc, "lineno", None)
                    raise TemplateSetError(
                        f"template {self.name}/{entry.src}"
                        f"{f' line {where}' if where else ''} failed: {exc}",
                        details={"template": self.name, "file": entry.src},
                    ) from None
                data = text.encode("utf-8")
            else:
                data = self._bytes(entry.src)
            planned.append(PlannedFile(path, parts, data))
        return planned


def _condition(cond: str, context: Mapping[str, Any], src: str) -> bool:
    negate = cond.startswith("not ")
    name = cond[4:].strip() if negate else cond.strip()
    if name not in context:
        raise TemplateSetError(f"condition of {src!r} names {name!r}, which is not an answer")
    return bool(context[name]) != negate


def _fill(part: str, context: Mapping[str, Any], src: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in context:
            raise TemplateSetError(f"file name {src!r} uses {m.group(1)!r}, which is not an answer")
        return str(context[m.group(1)])

    return _PLACEHOLDER.sub(sub, part)


# --------------------------------------------------------------------------- template sets

_SETS: dict[tuple[str, str], TemplateSet] = {}
_SETS_LOCK = threading.Lock()


def bundled_templates() -> Path:
    """The templates folder shipped in the wheel, or the repository's in a source checkout."""
    packaged = resources.files("corec_generator") / "templates"
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[3] / "templates"
    if checkout.is_dir():
        return checkout
    raise TemplateSetError(
        "the generator's templates are missing from this install: reinstall corec-generator, "
        "or set generator.templates_dir"
    )


def template_set(name: str, templates_dir: Path | None = None) -> TemplateSet:
    """The cached :class:`TemplateSet` ``name`` (``plugin``, ``react_app``, ``fastapi_app``).

    ``templates_dir`` (config ``generator.templates_dir``) overrides the bundled set when it
    holds a folder of that name; otherwise the bundled one is used.
    """
    root = None
    if templates_dir is not None and (Path(templates_dir) / name).is_dir():
        root = (Path(templates_dir) / name).resolve()
    if root is None:
        root = bundled_templates() / name
    key = (name, str(root))
    tset = _SETS.get(key)
    if tset is None:
        with _SETS_LOCK:
            tset = _SETS.get(key)
            if tset is None:
                tset = TemplateSet(name, root)
                _SETS[key] = tset
    return tset


def clear_cache() -> None:
    """Forget every loaded template set (after editing a ``templates_dir`` in a live process)."""
    with _SETS_LOCK:
        _SETS.clear()


# --------------------------------------------------------------------------- generation


@dataclass
class Job:
    """Everything one generation needs; built by the processor from params or the CLI."""

    tset: TemplateSet
    context: dict[str, Any]
    answers: dict[str, Any]
    root: Path
    project: tuple[str, ...]
    force: bool = False
    dry_run: bool = False
    skip_if_exists: Sequence[str] = ()
    exclude: Sequence[str] = ()
    meta: dict[str, Any] = field(default_factory=dict)


def answers_document(job: Job) -> bytes:
    """The answers file: what to feed back (as params or ``--answers``) to regenerate."""
    doc = {
        "_template": job.tset.name,
        **job.meta,
        "answers": job.answers,
    }
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def generate(job: Job, *, on_file: Callable[[PlannedFile], None] | None = None) -> dict[str, Any]:
    """Render, check every file against the disk, then write (unless ``dry_run``).

    Every conflict and containment problem is collected before the first write, and raised
    together: a refused run writes nothing. ``on_file`` is called after each file is written
    (the CLI's ``--verbose`` listing uses it).
    """
    planned = job.tset.render(job.context, job.exclude)
    planned.append(PlannedFile(ANSWERS_FILE, (ANSWERS_FILE,), answers_document(job)))
    root_exists = job.root.is_dir()
    if job.root.exists() and not root_exists:
        raise OutputEscapeError(f"output root {job.root} is not a folder")
    box = Sandbox(job.root, create=False) if root_exists else None
    try:
        if box is not None:
            _plan_actions(job, planned, box)
        if not job.dry_run:
            if box is None:
                box = Sandbox(job.root, create=True)
            for item in planned:
                if item.action == "skip":
                    continue
                box.write((*job.project, *item.parts), item.data, overwrite=item.action != "create")
                if on_file is not None:
                    on_file(item)
    finally:
        if box is not None:
            box.close()
    return _summary(job, planned)


def _plan_actions(job: Job, planned: list[PlannedFile], box: Sandbox) -> None:
    """Set each file's action from what is on disk; raise every problem at once."""
    try:
        skip = globs((*job.tset.skip_if_exists, *job.skip_if_exists))
    except GlobError as exc:
        raise TemplateSetError(f"skip_if_exists: {exc}") from None
    problems: list[dict[str, str]] = []
    escapes = 0
    for item in planned:
        try:
            kind = box.kind((*job.project, *item.parts))
        except OutputEscapeError as exc:
            escapes += 1
            problems.append({"loc": item.path, "msg": exc.message, "type": "path_escape"})
            continue
        if kind is None:
            continue
        if kind == "file" and skip.match(item.path):
            item.action = "skip"
        elif kind in ("file", "symlink") and job.force:
            item.action = "overwrite"
        elif kind in ("file", "symlink"):
            problems.append(
                {"loc": item.path, "msg": "exists (pass force to overwrite)", "type": "exists"}
            )
        else:
            problems.append(
                {"loc": item.path, "msg": f"a {kind} is in the way", "type": "path_escape"}
            )
            escapes += 1
    if problems:
        cls = OutputEscapeError if escapes else OutputExistsError
        listed = "; ".join(f"{p['loc']}: {p['msg']}" for p in problems[:5])
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise cls(
            f"nothing written: {len(problems)} problem(s) below {job.root}: {listed}{more}",
            details=problems,
        )


def _summary(job: Job, planned: list[PlannedFile]) -> dict[str, Any]:
    counts = {"create": 0, "overwrite": 0, "skip": 0}
    for item in planned:
        counts[item.action] += 1
    return {
        "template": job.tset.name,
        "project_dir": str(job.root.joinpath(*job.project)),
        "dry_run": job.dry_run,
        "files": [{"path": p.path, "action": p.action, "bytes": len(p.data)} for p in planned],
        "created": counts["create"],
        "overwritten": counts["overwrite"],
        "skipped": counts["skip"],
        "answers_file": ANSWERS_FILE,
    }
