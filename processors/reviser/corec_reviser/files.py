"""Which files a review reads: discovery with excludes, and containment for stream commands.

Stream and ``exec`` commands name ``paths`` relative to the configured ``reviser.root`` and can
never read outside it (the same rules as the generator's output paths: no absolute, drive or
UNC forms, no ``..``, no NUL, and symlinks resolved and kept inside the root). The CLI reads
whatever paths the user names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

from .config import ReviserConfig


class PathProblem(ValueError):  # noqa: N818 - names the condition, like the kernel errors
    """A path a command may not read; ``problems`` lists each with its reason."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['path']!r}: {p['reason']}" for p in problems))
        self.problems = problems


def _spec(patterns: Iterable[str]) -> object | None:
    import pathspec

    lines = [p for p in patterns if p.strip() and not p.lstrip().startswith("#")]
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


class Excluder:
    """``exclude_patterns`` plus ``.gitignore`` of the base folder, gitignore semantics."""

    def __init__(self, base: Path, config: ReviserConfig) -> None:
        patterns = list(config.exclude_patterns)
        if config.respect_gitignore:
            ignore = base / ".gitignore"
            if ignore.is_file():
                patterns += ignore.read_text(encoding="utf-8", errors="replace").splitlines()
        self.base = base
        self.spec = _spec(patterns)

    def excluded(self, relative: str, is_dir: bool = False) -> bool:
        if self.spec is None:
            return False
        path = relative + ("/" if is_dir else "")
        return bool(self.spec.match_file(path))  # type: ignore[attr-defined]


def collect(paths: Iterable[Path], base: Path, config: ReviserConfig) -> list[tuple[Path, str]]:
    """``(path, display name)`` of every Python file under ``paths``, sorted, excludes applied.

    A file named explicitly is reviewed even if a pattern would exclude it (as ruff does).
    """
    excluder = Excluder(base, config)
    found: dict[str, Path] = {}

    def name_of(path: Path) -> str:
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            return path.as_posix()

    for path in paths:
        if path.is_file():
            found[name_of(path)] = path
            continue
        for folder, dirs, files in os.walk(path, followlinks=False):
            here = Path(folder)
            dirs[:] = sorted(
                d for d in dirs if not excluder.excluded(name_of(here / d), is_dir=True)
            )
            for file in files:
                candidate = here / file
                if file.endswith((".py", ".pyi")) and not candidate.is_symlink():
                    name = name_of(candidate)
                    if not excluder.excluded(name):
                        found[name] = candidate
    return [(found[name], name) for name in sorted(found)]


def contained(root: Path, requested: list[str]) -> list[Path]:
    """Resolve stream-supplied paths under ``root``; raise PathProblem listing every bad one."""
    base = root.resolve()
    problems: list[dict[str, str]] = []
    out: list[Path] = []
    for raw in requested:
        reason = _form_problem(raw)
        if reason is None:
            target = (base / raw).resolve()
            if not target.is_relative_to(base):
                reason = "resolves outside the review root (a symlink or ..)"
            elif not target.exists():
                reason = "does not exist under the review root"
        if reason is not None:
            problems.append({"path": raw, "reason": reason})
        else:
            out.append(target)
    if problems:
        raise PathProblem(problems)
    return out


def _form_problem(raw: str) -> str | None:
    if not raw or not raw.strip():
        return "empty"
    if "\x00" in raw:
        return "contains NUL"
    if "\\" in raw:
        return "backslashes are not allowed; use / between folders"
    win = PureWindowsPath(raw)
    if raw.startswith("/") or win.drive or win.root or raw.startswith("~"):
        return "must be relative to the review root"
    if ".." in PurePosixPath(raw).parts:
        return ".. is not allowed"
    return None
