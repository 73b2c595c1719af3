"""Which files a review reads: discovery with excludes, and containment for stream commands.

Stream and ``exec`` commands name ``paths`` relative to the configured ``reviser.root`` and can
never read outside it (the same rules as the generator's output paths: no absolute, drive or
UNC forms, no ``..``, no NUL, and symlinks resolved and kept inside the root). The CLI reads
whatever paths the user names.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

from .config import ReviserConfig


class Unreadable(ValueError):  # noqa: N818 - names the condition, like the kernel errors
    """Why a file cannot be reviewed: one line, shown as the file's ``error``."""


def read_source(path: Path, limit: int | None = None) -> str:
    """The text of a regular file, at most ``limit`` bytes; raise :class:`Unreadable`.

    Never blocks on what is not a regular file: the open is non-blocking (a FIFO opens at once,
    with no writer) and anything but a regular file (FIFO, device, socket, folder) is refused
    before a byte is read.
    """
    return read_regular(path, limit)[0]


def read_regular(
    path: Path, limit: int | None = None, *, follow: bool = True
) -> tuple[str, os.stat_result]:
    """:func:`read_source`, plus the ``fstat`` of the file that was read.

    With ``follow=False`` a symlink is refused, not followed (``revise`` opens the resolved
    path: a link there means the tree changed under it). The stat is what ``revise`` compares
    before it replaces the file, to never overwrite a file that changed meanwhile.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable("not a regular file (a FIFO, device, socket or folder)")
        if limit is not None and info.st_size > limit:
            raise Unreadable(f"{info.st_size} bytes, over max_source_bytes={limit}")
        chunks = []
        size = 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:  # it grew since fstat
                raise Unreadable(f"{size} bytes, over max_source_bytes={limit}")
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8"), info
    except UnicodeDecodeError:
        raise Unreadable("not UTF-8 text") from None


def _regular(path: Path) -> bool:
    """A regular file itself, not a symlink, FIFO, device or socket (never follows a link)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


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

    A file named explicitly is reviewed even if a pattern would exclude it (as ruff does); one
    that is not a regular file (a FIFO...) is kept, to be reported as unreadable. Inside
    folders only regular files count: symlinks, FIFOs, devices and sockets are skipped.
    """
    excluder = Excluder(base, config)
    found: dict[str, Path] = {}

    def name_of(path: Path) -> str:
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            return path.as_posix()

    for path in paths:
        if not path.is_dir():
            found[name_of(path)] = path
            continue
        for folder, dirs, files in os.walk(path, followlinks=False):
            here = Path(folder)
            dirs[:] = sorted(
                d for d in dirs if not excluder.excluded(name_of(here / d), is_dir=True)
            )
            for file in files:
                candidate = here / file
                if file.endswith((".py", ".pyi")) and _regular(candidate):
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
