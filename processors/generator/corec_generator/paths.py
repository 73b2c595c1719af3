"""Output containment: the one module every generated path goes through.

Two jobs, kept apart so each can be tested on its own:

* **Validation** (pure, no file system): :func:`check_name` and :func:`check_relative` return a
  list of problems instead of raising, so the generator can report every problem of a command
  at once before anything is written.
* **Writing** (:class:`Sandbox`): a root directory opened once; every file below it is reached
  by walking directory file descriptors with ``O_NOFOLLOW``, so a symlink at any level, even one
  swapped in while a run is in progress, is never followed out of the root. Files are created
  with ``O_EXCL``; overwriting (only with ``force``) writes a new file exclusively and renames
  it over the old one, which replaces a symlink itself instead of writing through it.

The root itself is trusted (it comes from the configuration or from the user's own ``--output``);
everything below it comes from a command and is not.
"""

from __future__ import annotations

import contextlib
import errno
import keyword
import os
import re
import secrets
import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from corec_plugin_kit import HandlerError

#: Windows device names: a file called ``nul.txt`` or ``COM1`` is unusable (or worse) there, and
#: generated projects are meant to be cloned anywhere.
RESERVED_DEVICE_NAMES = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$", "clock$"]
    + [f"com{i}" for i in range(10)]
    + [f"lpt{i}" for i in range(10)]
    + ["com\u00b9", "com\u00b2", "com\u00b3", "lpt\u00b9", "lpt\u00b2", "lpt\u00b3"]
)

#: Names a generated package may not take: they would shadow the kit, its processors, the
#: ``kernel`` config section, or the test folder pytest imports.
RESERVED_PACKAGE_NAMES = frozenset(
    {
        "kernel",
        "generator",
        "manager",
        "reviser",
        "corec",
        "corec_plugin_kit",
        "corec_generator",
        "corec_manager",
        "corec_reviser",
        "test",
        "tests",
        "site",
        "setup",
        "conftest",
    }
)

# Project names: ASCII, start with a letter, then letters, digits, '_' or '-'.
# Anything else (dots, slashes, spaces, unicode look-alikes) is refused rather than transformed,
# so the name the user typed is the name on disk.
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}", re.ASCII)
# One segment of a relative output path: a conservative portable file name.
SEGMENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", re.ASCII)
MAX_RELATIVE_LEN = 1024

_OPEN_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class OutputEscapeError(HandlerError):
    """A path would leave the output root (a symlink, a file where a folder should be...)."""


class OutputExistsError(HandlerError):
    """A file to be written exists and ``force`` was not given."""


# --------------------------------------------------------------------------- names


def snake(value: str) -> str:
    """``My-Plugin`` / ``myPlugin`` -> ``my_plugin`` (the Python package name)."""
    value = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", value)
    value = re.sub(r"[^A-Za-z0-9]+", "_", value)
    return value.strip("_").lower()


def slug(value: str) -> str:
    """``My_Plugin`` -> ``my-plugin`` (distribution and npm names)."""
    return snake(value).replace("_", "-")


def pascal(value: str) -> str:
    """``my_plugin`` -> ``MyPlugin`` (class names)."""
    return "".join(part[:1].upper() + part[1:] for part in snake(value).split("_") if part)


def camel(value: str) -> str:
    """``my_plugin`` -> ``myPlugin`` (JavaScript identifiers)."""
    p = pascal(value)
    return p[:1].lower() + p[1:]


def _is_device_name(segment: str) -> bool:
    # Windows ignores everything from the first dot (and trailing spaces): "nul.tar.gz" is NUL.
    return segment.split(".", 1)[0].rstrip(" ").lower() in RESERVED_DEVICE_NAMES


def check_name(value: object, field: str, *, package: bool = True) -> list[dict[str, str]]:
    """Problems with a project name (empty list when it is fine).

    The name becomes a folder name and, with ``package``, a Python package (its snake form must
    be an identifier that is neither a keyword, a standard-library module nor reserved here).
    """
    problems: list[dict[str, str]] = []

    def bad(msg: str, kind: str) -> list[dict[str, str]]:
        problems.append({"loc": field, "msg": msg, "type": kind})
        return problems

    if not isinstance(value, str) or not value:
        return bad("must be a non-empty name", "name_empty")
    if "\x00" in value:
        return bad("must not contain NUL", "name_nul")
    if "/" in value or "\\" in value:
        return bad("must be a name, not a path (no '/' or '\\')", "name_separator")
    if ".." in value:
        return bad("must not contain '..'", "name_dotdot")
    if not NAME_RE.fullmatch(value):
        return bad(
            "must start with an ASCII letter and hold only letters, digits, '_' or '-' "
            "(at most 64 characters)",
            "name_pattern",
        )
    if _is_device_name(value):
        return bad(f"{value!r} is a reserved device name on Windows", "name_reserved")
    if package:
        pkg = snake(value)
        if not pkg.isidentifier() or keyword.iskeyword(pkg) or keyword.issoftkeyword(pkg):
            return bad(f"{pkg!r} is not usable as a Python package name", "name_identifier")
        if pkg in RESERVED_PACKAGE_NAMES or pkg in sys.stdlib_module_names:
            return bad(f"{pkg!r} would shadow an existing module; pick another name", "name_taken")
    return problems


def check_relative(value: object, field: str = "output") -> tuple[list[str], list[dict[str, str]]]:
    """Split a command's relative ``output`` into segments, or say why it is refused.

    ``""`` and ``"."`` mean the root itself. Refused: absolute paths, drive (``C:``) and UNC
    (``\\\\host\\share``, ``//host``) forms, backslashes, NUL and control characters, ``..``,
    ``~``, Windows device names, and segments outside a portable file-name alphabet.
    """
    problems: list[dict[str, str]] = []

    def bad(msg: str, kind: str) -> tuple[list[str], list[dict[str, str]]]:
        problems.append({"loc": field, "msg": msg, "type": kind})
        return [], problems

    if value is None:
        return [], problems
    if not isinstance(value, str):
        return bad("must be a string", "path_type")
    if len(value) > MAX_RELATIVE_LEN:
        return bad(f"longer than {MAX_RELATIVE_LEN} characters", "path_too_long")
    if "\x00" in value:
        return bad("must not contain NUL", "path_nul")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return bad("must not contain control characters", "path_control")
    if "\\" in value:
        return bad("use '/' as separator; '\\' (and UNC paths) are refused", "path_backslash")
    if value.startswith("/"):
        return bad(
            "must be relative to the configured output root (absolute paths are refused)",
            "path_absolute",
        )
    if re.match(r"[A-Za-z]:", value):
        return bad("drive-qualified paths are refused", "path_drive")
    segments: list[str] = []
    for segment in value.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            return bad("must not contain '..'", "path_dotdot")
        if segment.startswith("~"):
            return bad("'~' is not expanded; name a folder below the root", "path_tilde")
        if not SEGMENT_RE.fullmatch(segment) or segment.endswith((".", " ")):
            return bad(
                f"segment {segment!r} must hold only letters, digits, '.', '_' or '-'",
                "path_segment",
            )
        if _is_device_name(segment):
            return bad(f"segment {segment!r} is a reserved device name", "path_reserved")
        segments.append(segment)
    return segments, problems


def check_template_path(parts: Sequence[str]) -> str | None:
    """Why a rendered template path is unsafe, or ``None``: the last line of defence against a
    template (or an answer substituted into a file name) producing ``..`` or an absolute path."""
    if not parts:
        return "empty path"
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\\" in part or "\x00" in part:
            return f"segment {part!r} is not a plain file name"
        if _is_device_name(part):
            return f"segment {part!r} is a reserved device name"
    return None


# --------------------------------------------------------------------------- writing


class Sandbox:
    """A directory that files are written below and never outside.

    Open once per generation (``with Sandbox(root) as box``). Each write walks from the root's
    descriptor, segment by segment, with ``O_NOFOLLOW``: a symlink anywhere below the root makes
    the write fail with :class:`OutputEscapeError` instead of following it, including one that was
    swapped in after the run started.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.root = Path(os.path.abspath(root))
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._fd: int | None = os.open(self.root, _OPEN_DIR)
        except NotADirectoryError:
            raise OutputEscapeError(f"output root {self.root} is not a folder") from None
        except FileNotFoundError:
            raise OutputEscapeError(f"output root {self.root} does not exist") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError("sandbox is closed")
        return self._fd

    def _escape(self, parts: Iterable[str], why: str) -> OutputEscapeError:
        where = "/".join(parts)
        return OutputEscapeError(
            f"refusing to write {where!r} below {self.root}: {why}",
            details={"path": where, "root": str(self.root), "reason": why},
        )

    def _open_dir(self, parts: Sequence[str], *, create: bool) -> int | None:
        """Descriptor of ``root/parts`` (caller closes it), creating folders when asked.

        Returns ``None`` when a folder is missing and ``create`` is false.
        """
        fd = os.dup(self.fd)
        try:
            for i, part in enumerate(parts):
                try:
                    nxt = os.open(part, _OPEN_DIR | _NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    # made concurrently? opening it below still refuses a symlink
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o777, dir_fd=fd)
                    nxt = os.open(part, _OPEN_DIR | _NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                        raise self._escape(
                            parts[: i + 1], "it is a symlink or not a folder"
                        ) from None
                    raise
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    def kind(self, parts: Sequence[str]) -> str | None:
        """``"file"``, ``"dir"``, ``"symlink"``, ``"other"`` or ``None`` (missing), without
        following symlinks at any level (a symlinked parent raises :class:`OutputEscapeError`)."""
        dfd = self._open_dir(parts[:-1], create=False)
        if dfd is None:
            return None
        try:
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            os.close(dfd)
        if stat.S_ISLNK(st.st_mode):
            return "symlink"
        if stat.S_ISDIR(st.st_mode):
            return "dir"
        if stat.S_ISREG(st.st_mode):
            return "file"
        return "other"

    def write(self, parts: Sequence[str], data: bytes, *, overwrite: bool = False) -> None:
        """Write ``data`` to ``root/parts``, creating folders; never outside the root.

        Without ``overwrite`` the file is created exclusively (an existing file, or a symlink
        there, raises :class:`OutputExistsError`). With it, the data goes to a fresh temporary file
        (also exclusive) renamed over the target, so a symlink at the target is replaced, not
        written through.
        """
        dfd = self._open_dir(parts[:-1], create=True)
        assert dfd is not None  # create=True never returns None
        name = parts[-1]
        try:
            target = name
            if overwrite:
                target = f".{name}.{secrets.token_hex(6)}.tmp"
            try:
                fd = os.open(target, _CREATE_FILE, 0o666, dir_fd=dfd)
            except FileExistsError:
                raise OutputExistsError(
                    f"{'/'.join(parts)} exists below {self.root}; pass force to overwrite it",
                    details={"path": "/".join(parts)},
                ) from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR):
                    raise self._escape(parts, "a symlink or folder is in the way") from None
                raise
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            if overwrite:
                try:
                    os.replace(target, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                except OSError as exc:
                    os.unlink(target, dir_fd=dfd)
                    if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                        raise self._escape(parts, "a folder is in the way") from None
                    raise
        finally:
            os.close(dfd)
