"""``revise``: CoreC codex's action, one file reviewed and rewritten in place when needed.

codex answered ``{"status": "ok", "message": "Archivo revisado", "path": ...}`` when it wrote
the file and ``"Sin cambios"`` when it did not; those keys and messages are kept, with the
kit's own beside them (``changed``, ``reason``, the findings of the file as it is on disk).

The new text is the back-end's fix path (what ``review_code`` returns in ``fixed``), so the
file is only formatted: its code is never changed otherwise. It is written only when it
differs, the source parses, the linters did not crash and the formatted text parses too, and
then atomically: a temporary file in the same folder, given the file's mode, renamed over it
with :func:`os.replace`, after checking that the file did not change since it was read.

Shared by the ``revise`` action (paths contained under ``reviser.root``) and
``corec-kit reviser revise FILE`` (any file the user names).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import Unreadable, read_regular
from .findings import FileReview, Review

if TYPE_CHECKING:
    from .backends import Backend

#: codex's two answers, word for word.
REVISED = "Archivo revisado"
UNCHANGED = "Sin cambios"

PYTHON_SUFFIXES = (".py", ".pyi")
BOM = "\ufeff"

#: ``offload(fn, *args)``: await a blocking ``fn(*args)`` off the event loop.
Offload = Callable[..., Awaitable[Any]]


class ReviseRefused(ValueError):  # noqa: N818 - names the condition, like the kernel errors
    """The file named cannot be revised (the caller's input: ``invalid_params``)."""


class ReviseFailed(RuntimeError):  # noqa: N818 - names the condition, like the kernel errors
    """A linter crashed, or the file could not be written (``handler_error``); nothing written."""


def check_target(path: Path) -> None:
    """Refuse what is not a regular Python file (never follows a symlink, never opens a FIFO)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        raise ReviseRefused(exc.strerror or str(exc)) from None
    if stat.S_ISDIR(mode):
        raise ReviseRefused("a folder, not a file: revise takes one file")
    if stat.S_ISLNK(mode):
        raise ReviseRefused("a symlink (it changed after the path was resolved)")
    if not stat.S_ISREG(mode):
        raise ReviseRefused("not a regular file (a FIFO, device or socket)")
    if path.suffix not in PYTHON_SUFFIXES:
        raise ReviseRefused(f"only Python files ({', '.join(PYTHON_SUFFIXES)}) are revised")


def _identity(info: os.stat_result) -> tuple[int, ...]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_mode)


def _unchanged_since(path: Path, before: os.stat_result) -> None:
    try:
        now = os.lstat(path)
    except OSError as exc:
        raise ReviseFailed(f"the file went away while it was revised: {exc.strerror}") from None
    if _identity(now) != _identity(before) or Path(os.path.realpath(path)) != path:
        raise ReviseFailed("the file changed while it was revised; nothing written, send it again")


def write_in_place(path: Path, text: str, before: os.stat_result) -> None:
    """Replace ``path`` by ``text``: a temporary file in its folder, then :func:`os.replace`.

    Keeps the file's mode (and its owner when allowed); refuses a read-only file and a file
    that changed since ``before`` was taken; never leaves the temporary file behind.
    """
    if not before.st_mode & 0o222 or not os.access(path, os.W_OK):
        raise ReviseFailed(f"the file is read-only (mode {stat.filemode(before.st_mode)})")
    _unchanged_since(path, before)
    try:
        prefix = f".{path.name[:100]}."  # a long name must still leave room for the suffixes
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".revise.tmp")
    except OSError as exc:
        raise ReviseFailed(f"cannot write in the file's folder: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text.encode("utf-8"))
            out.flush()
            os.fchmod(out.fileno(), stat.S_IMODE(before.st_mode))
            if (before.st_uid, before.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(OSError):  # only root may give a file away
                    os.fchown(out.fileno(), before.st_uid, before.st_gid)
            os.fsync(out.fileno())
        _unchanged_since(path, before)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ReviseFailed(f"cannot write the file: {exc.strerror or exc}") from None
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a power cut
        folder = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _syntax_error(review: FileReview) -> str | None:
    """Where the first syntax error (``E999``) of a review is, or None."""
    first = next((f for f in review.findings if f.code == "E999"), None)
    if first is None:
        return None
    return f"line {first.line}, column {first.column}: {first.message}"


def answer(
    name: str, backend: str, review: FileReview, *, changed: bool, diff: str, reason: str | None
) -> dict[str, Any]:
    """codex's three keys, then the kit's: what changed, why not, the file's findings now."""
    result = Review(backend=backend, files=[review])
    return {
        "status": "ok",
        "message": REVISED if changed else UNCHANGED,
        "path": name,
        "changed": changed,
        "reason": reason,
        "backend": backend,
        "diff": diff,
        "findings": [f.model_dump(mode="json") for f in review.findings],
        "summary": result.summary(),
        "clean": result.clean,
    }


async def revise_file(
    backend: Backend,
    path: Path,
    name: str,
    limit: int,
    offload: Offload = asyncio.to_thread,
) -> dict[str, Any]:
    """Review ``path`` (already resolved and contained) and rewrite it when formatting changes it.

    Raise :class:`ReviseRefused` for what cannot be revised (not a regular ``.py`` file,
    unreadable, too large, not UTF-8) and :class:`ReviseFailed` when a linter crashed or the
    write failed. A source that does not parse is answered, not raised: ``"Sin cambios"``
    with ``reason``.
    """
    check_target(path)
    try:
        source, before = await offload(_read, path, limit)
    except Unreadable as exc:
        raise ReviseRefused(str(exc)) from None
    # A UTF-8 byte order mark is kept as it is and not shown to the linters: pyflakes would
    # call it a syntax error, ruff on stdin would drop it (a change nobody asked for).
    bom = BOM if source.startswith(BOM) else ""
    source = source[len(bom) :]
    first = await backend.areview(source, name, fix=True)
    if first.error is not None:
        raise ReviseFailed(f"{name}: the linter crashed, nothing written: {first.error}")
    problem = _syntax_error(first)
    if problem is None and first.fixed is None:
        problem = "the formatter could not parse it"
    if problem is not None:
        reason = f"not rewritten: the file does not parse ({problem})"
        return answer(name, backend.name, first, changed=False, diff="", reason=reason)
    fixed = first.fixed
    assert fixed is not None  # a source that parses has its formatted text with fix=True
    if fixed == source:
        return answer(name, backend.name, first, changed=False, diff="", reason=None)
    # The findings of the text about to be written (their lines are the new file's), and a last
    # check that the formatter's output still parses before it replaces anything.
    after = await backend.areview(fixed, name)
    if after.error is not None:
        raise ReviseFailed(f"{name}: the linter crashed, nothing written: {after.error}")
    if _syntax_error(after) is not None:
        raise ReviseFailed(f"{name}: the formatted text does not parse; nothing written")
    await offload(write_in_place, path, bom + fixed, before)
    return answer(name, backend.name, after, changed=True, diff=first.diff, reason=None)


def _read(path: Path, limit: int) -> tuple[str, os.stat_result]:
    return read_regular(path, limit, follow=False)
