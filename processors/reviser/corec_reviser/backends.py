"""The two review back-ends behind one interface: ``review(source, name) -> FileReview``.

* ``black+pyflakes`` (the original CoreC guide's): library calls. CPU-bound pure Python that
  can take a minute on a large source, recurse past the stack or crash the interpreter, so the
  async entry points run it in worker processes (``runner``: the kernel's killable process
  pool), and ``review_files`` in a process pool of its own.
* ``ruff``: the ruff binary shipped in its wheel, fed the source on stdin (``format`` for the
  formatter's verdict, ``check --select F`` for the pyflakes rules), isolated from the reviewed
  tree's own ruff configuration unless ``ruff_isolated`` is off. For many files it is run once
  over all of them (file by file when that run crashes). The async entry points kill ruff when
  the awaiting task is cancelled.

A linter that crashes on a file (ruff killed by a signal or panicking, black or pyflakes
raising anything but a syntax error, RecursionError, a worker process that died) gives that
file an ``error`` with ``error_kind="crash"``: never a clean verdict, never a syntax error.

Where the two differ (tested in tests/reviser/test_backends.py): ruff honours ``# noqa``
comments, pyflakes does not; ruff reports syntax errors as ``E999``-like ``invalid-syntax``
findings with its own wording; a few pyflakes-only messages (doctest checks, some
``%``-format cases) have no ruff counterpart in the F rules and vice versa.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .config import ReviserConfig
from .files import Unreadable, read_source
from .findings import FileReview, Finding, crashed, severity_of, unreadable
from .rules import PYFLAKES_CODES, UNKNOWN_PYFLAKES

#: ``runner(fn, *args)``: await ``fn(*args)`` in a worker process that is killed when the
#: awaiting task is cancelled (``api.run_in_process`` bound to the handler's ``ctx.kernel``).
Runner = Callable[..., Awaitable[Any]]

T = TypeVar("T")


_WOULD_REFORMAT = re.compile(r"^Would reformat: (.+)$|^\s*--> (.+?):\d+:\d+$", re.MULTILINE)


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def unified_diff(before: str, after: str, name: str) -> str:
    if before == after:
        return ""
    return "".join(
        difflib.unified_diff(
            _lines(before), _lines(after), fromfile=f"a/{name}", tofile=f"b/{name}"
        )
    )


def verdict(
    name: str,
    source: str,
    formatted: str | None,
    findings: list[Finding],
    fix: bool,
    parse_error: str = "cannot parse",
) -> FileReview:
    """The one FileReview both back-ends build; ``formatted`` None = the source does not parse."""
    if formatted is None:
        if not any(f.code == "E999" for f in findings):
            error = Finding(
                file=name, line=1, column=1, code="E999", message=parse_error, severity="error"
            )
            findings = [error, *findings]
        return FileReview(file=name, formatted=True, findings=findings)
    return FileReview(
        file=name,
        formatted=formatted == source,
        diff=unified_diff(source, formatted, name),
        findings=findings,
        fixed=formatted if fix else None,
    )


class Backend(Protocol):
    name: str

    def review(self, source: str, name: str, *, fix: bool = False) -> FileReview: ...

    async def areview(self, source: str, name: str, *, fix: bool = False) -> FileReview: ...

    def review_files(self, files: Sequence[Path], names: Sequence[str]) -> list[FileReview]: ...

    async def areview_files(
        self, files: Sequence[Path], names: Sequence[str]
    ) -> list[FileReview]: ...

    def close(self) -> None: ...


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _exception_text(exc: BaseException) -> str:
    return _one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


# --------------------------------------------------------------------------- black + pyflakes


class _Collector:
    """A pyflakes reporter that keeps messages instead of printing them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.findings: list[Finding] = []
        self.problem: str | None = None  # pyflakes could not check the source at all

    def unexpectedError(self, filename: str, msg: str) -> None:  # noqa: N802 - pyflakes API
        # pyflakes says this when compiling the source raised something other than a
        # SyntaxError (RecursionError on deep nesting, MemoryError...): nothing was checked.
        self.problem = msg

    def syntaxError(  # noqa: N802 - pyflakes API
        self, filename: str, msg: str, lineno: int | None, offset: int | None, text: str | None
    ) -> None:
        self.findings.append(
            Finding(
                file=self.name,
                line=lineno or 1,
                column=offset or 1,
                code="E999",
                message=f"SyntaxError: {msg}",
                severity="error",
            )
        )

    def flake(self, message: Any) -> None:
        code = PYFLAKES_CODES.get(type(message).__name__, UNKNOWN_PYFLAKES)
        self.findings.append(
            Finding(
                file=self.name,
                line=message.lineno,
                column=message.col + 1,
                code=code,
                message=message.message % message.message_args,
                severity=severity_of(code),
            )
        )


_IMPORT_LOCK = threading.Lock()


def _tools() -> tuple[Any, Any]:
    """black and pyflakes' ``check``, imported under a lock.

    Threads importing black for the first time at once can see it half initialised (``module
    'black' has no attribute 'Mode'``); one import at a time cannot.
    """
    with _IMPORT_LOCK:
        import black
        from pyflakes.api import check  # type: ignore[import-untyped]
    return black, check


def review_source(config: ReviserConfig, source: str, name: str, fix: bool = False) -> FileReview:
    """black + pyflakes on one source, in this process (module level: worker processes run it).

    A syntax error is an ``E999`` finding; anything else black or pyflakes raise (RecursionError
    included) makes the file a crash, not a verdict.
    """
    black, check = _tools()
    collector = _Collector(name)
    try:
        check(source, name, collector)
    except Exception as exc:  # noqa: BLE001 - a crash of the checker, whatever it raised
        return crashed(name, f"pyflakes crashed: {_exception_text(exc)}")
    if collector.problem is not None:
        return crashed(name, f"pyflakes could not check the source: {collector.problem}")
    findings = sorted(collector.findings, key=lambda f: (f.line, f.column, f.code))
    try:
        formatted = black.format_str(source, mode=black.Mode(line_length=config.line_length))
    except black.InvalidInput as exc:  # the source does not parse
        return verdict(name, source, None, findings, fix, parse_error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a crash of the formatter, whatever it raised
        return crashed(name, f"black crashed: {_exception_text(exc)}")
    return verdict(name, source, formatted, findings, fix)


def review_path(config: ReviserConfig, path: Path, name: str, fix: bool = False) -> FileReview:
    """Read and review one file with black + pyflakes (unreadable files get ``error``)."""
    try:
        source = read_source(path, config.max_source_bytes)
    except Unreadable as exc:
        return unreadable(name, str(exc))
    return review_source(config, source, name, fix)


def _review_chunk(config: ReviserConfig, items: list[tuple[str, str]]) -> list[FileReview]:
    return [review_path(config, Path(path), name) for path, name in items]


def _chunks(items: list[tuple[str, str]], workers: int) -> list[list[tuple[str, str]]]:
    size = max(1, len(items) // (max(1, workers) * 4))
    return [items[i : i + size] for i in range(0, len(items), size)]


class BlackPyflakes:
    name = "black+pyflakes"

    def __init__(self, config: ReviserConfig, runner: Runner | None = None) -> None:
        self.config = config
        self.runner = runner
        self._pool: Any = None  # the process pool of the synchronous review_files

    def review(self, source: str, name: str, *, fix: bool = False) -> FileReview:
        """In this process (tests, the CLI's --fix of files already reviewed once)."""
        return review_source(self.config, source, name, fix)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(config, *args)`` through the runner; a dead worker is returned, not raised."""
        from corec_plugin_kit.api import WorkerDied

        assert self.runner is not None
        try:
            return await self.runner(fn, self.config, *args)
        except WorkerDied as exc:
            return exc

    async def areview(self, source: str, name: str, *, fix: bool = False) -> FileReview:
        """In a worker process of ``runner`` (killed with the task); else in a thread."""
        if self.runner is None:
            return await asyncio.to_thread(self.review, source, name, fix=fix)
        got = await self._run(review_source, source, name, fix)
        if isinstance(got, FileReview):
            return got
        return crashed(name, f"black+pyflakes crashed: {got}")

    async def areview_files(self, files: Sequence[Path], names: Sequence[str]) -> list[FileReview]:
        """Many files, in chunks over ``runner``'s processes; a chunk whose worker died is
        reviewed again file by file, so only the file that kills a worker is a crash."""
        if self.runner is None:
            return await asyncio.to_thread(self.review_files, files, names)
        items = [(str(f), n) for f, n in zip(files, names, strict=True)]

        async def chunk(part: list[tuple[str, str]]) -> list[FileReview]:
            got = await self._run(_review_chunk, part)
            if isinstance(got, list):
                return got
            if len(part) == 1:
                return [crashed(part[0][1], f"black+pyflakes crashed: {got}")]
            out: list[FileReview] = []
            for item in part:
                out += await chunk([item])
            return out

        parts = await _all(*(chunk(p) for p in _chunks(items, os.cpu_count() or 1)))
        return [review for part in parts for review in part]

    def review_files(self, files: Sequence[Path], names: Sequence[str]) -> list[FileReview]:
        """Many files (the CLI): a killable process pool of ``jobs`` workers, kept until
        :meth:`close`."""
        if self.runner is not None:
            raise RuntimeError("with a runner, use areview_files from the event loop")
        from corec_plugin_kit.api import ProcessPool

        if self._pool is None:
            self._pool = ProcessPool(self.config.jobs or None)
        own = BlackPyflakes(self.config, runner=self._pool.run)
        return asyncio.run(own.areview_files(files, names))

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def read_problem(path: Path, config: ReviserConfig) -> str | None:
    """Why ``path`` cannot be reviewed (unreadable, too large, not UTF-8, not a file), or None."""
    try:
        read_source(path, config.max_source_bytes)
    except Unreadable as exc:
        return str(exc)
    return None


def review_file(backend: Backend, path: Path, name: str) -> FileReview:
    """Read and review one file (unreadable or oversized files get ``error``)."""
    limit = getattr(getattr(backend, "config", None), "max_source_bytes", None)
    try:
        source = read_source(path, limit)
    except Unreadable as exc:
        return unreadable(name, str(exc))
    return backend.review(source, name)


# --------------------------------------------------------------------------- ruff


@dataclass(slots=True)
class Ran:
    """What one ruff run gave."""

    returncode: int
    stdout: str
    stderr: str


def _run(args: list[str], data: bytes | None = None) -> Ran:
    proc = subprocess.run(args, input=data, capture_output=True, check=False)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    return Ran(proc.returncode, out, err)


async def _arun(args: list[str], data: bytes | None = None) -> Ran:
    """Run ruff as an asyncio subprocess; killed when the awaiting task is cancelled."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate(data)
    except BaseException:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await _settle(proc.wait())
        raise
    return Ran(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))


async def _all(*aws: Awaitable[T]) -> list[T]:
    """``asyncio.gather`` that, when cancelled or failing, waits for every child to end.

    gather alone answers at the first child's cancellation, while the others may still be
    killing and reaping their ruff subprocess; the caller must not return before that.
    """
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException as exc:
        if not isinstance(exc, asyncio.CancelledError):  # gather cancelled them already
            for task in tasks:
                task.cancel()
        await _settle(asyncio.wait(tasks))
        raise


async def _settle(aw: Awaitable[Any]) -> None:
    """Await ``aw`` to its end even if this task is cancelled again meanwhile (cleanup that
    must finish: reaping a killed subprocess); the caller re-raises its own error after."""
    future = asyncio.ensure_future(aw)
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(future)


_PANIC = re.compile(r"panicked|Ruff crashed|This indicates a bug in Ruff", re.IGNORECASE)


def _crash_reason(tool: str, ran: Ran) -> str:
    code = ran.returncode
    if code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exit code {code}"
    detail = _one_line(ran.stderr) or "no output"
    return f"ruff {tool} crashed ({how}): {detail}"


def _check_items(ran: Ran) -> list[dict[str, Any]] | str:
    """The JSON items of a ``ruff check`` run, or why the run is a crash."""
    if ran.returncode != 0 or _PANIC.search(ran.stderr):  # --exit-zero: findings exit 0
        return _crash_reason("check", ran)
    try:
        items = json.loads(ran.stdout)
    except ValueError:
        return _crash_reason("check", ran)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        return _crash_reason("check", ran)
    for item in items:
        if item.get("code") == "panic" or _PANIC.search(str(item.get("message") or "")):
            return f"ruff check crashed: {_one_line(str(item.get('message') or 'panic'))}"
    return items


class Ruff:
    name = "ruff"

    def __init__(self, config: ReviserConfig) -> None:
        from ruff.__main__ import find_ruff_bin  # type: ignore[import-untyped]

        self.config = config
        self.binary = str(find_ruff_bin())

    def _common(self) -> list[str]:
        args = ["--line-length", str(self.config.line_length)]
        if self.config.ruff_isolated:
            args.insert(0, "--isolated")
        return args

    def _check_args(self, name: str | None) -> list[str]:
        args = [self.binary, "check", *self._common(), "--select", "F", "--output-format", "json"]
        args += ["--no-cache", "--exit-zero"]
        if name is not None:
            args += ["--stdin-filename", name, "-"]
        return args

    def _format_args(self, name: str) -> list[str]:
        return [self.binary, "format", *self._common(), "--no-cache", "--stdin-filename", name, "-"]

    def _diff_args(self, paths: list[str]) -> list[str]:
        return [self.binary, "format", *self._common(), "--no-cache", "--diff", *paths]

    def _findings(
        self, items: list[dict[str, Any]], name_of: dict[str, str] | None = None
    ) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = {}
        for item in items:
            file = item.get("filename") or ""
            name = (name_of or {}).get(file, file)
            code = item.get("code") or "E999"
            if code == "invalid-syntax":  # ruff's name for what pyflakes reports as E999
                code = "E999"
            loc = item.get("location") or {}
            out.setdefault(name, []).append(
                Finding(
                    file=name,
                    line=loc.get("row", 1),
                    column=loc.get("column", 1),
                    code=code,
                    message=item.get("message", ""),
                    severity=severity_of(code),
                )
            )
        return out

    def _verdict(self, source: str, name: str, fmt: Ran, check: Ran, fix: bool) -> FileReview:
        items = _check_items(check)
        if isinstance(items, str):
            return crashed(name, items)
        # Everything a stdin run reports is about that one source (ruff may show the
        # --stdin-filename made absolute).
        findings = sorted(
            (
                f.model_copy(update={"file": name})
                for fs in self._findings(items).values()
                for f in fs
            ),
            key=lambda f: (f.line, f.column, f.code),
        )
        if fmt.returncode == 0 and not _PANIC.search(fmt.stderr):
            return verdict(name, source, fmt.stdout, findings, fix)
        # ruff format refuses a file that does not parse: exit code 2, "Failed to parse"
        parse_error = fmt.returncode == 2 and "Failed to parse" in fmt.stderr
        if parse_error and not _PANIC.search(fmt.stderr):
            return verdict(name, source, None, findings, fix)
        return crashed(name, _crash_reason("format", fmt))

    def review(self, source: str, name: str, *, fix: bool = False) -> FileReview:
        data = source.encode()
        fmt = _run(self._format_args(name), data)
        check = _run(self._check_args(name), data)
        return self._verdict(source, name, fmt, check, fix)

    async def areview(self, source: str, name: str, *, fix: bool = False) -> FileReview:
        """Both ruff runs at once, as asyncio subprocesses (killed if the task is cancelled)."""
        data = source.encode()
        fmt, check = await _all(
            _arun(self._format_args(name), data), _arun(self._check_args(name), data)
        )
        return self._verdict(source, name, fmt, check, fix)

    def _prepare(
        self, files: Sequence[Path], names: Sequence[str]
    ) -> tuple[dict[str, str], dict[str, str], list[str]]:
        # Unreadable, oversized or non-UTF-8 files get the same error as with the other
        # back-end (ruff alone would skip them with a warning on stderr).
        errors = {
            n: e for f, n in zip(files, names, strict=True) if (e := read_problem(f, self.config))
        }
        name_of = {
            str(f.resolve()): n for f, n in zip(files, names, strict=True) if n not in errors
        }
        paths = [str(f) for f, n in zip(files, names, strict=True) if n not in errors]
        return errors, name_of, paths

    def _batch(
        self,
        files: Sequence[Path],
        names: Sequence[str],
        errors: dict[str, str],
        name_of: dict[str, str],
        check: Ran,
        fmt: Ran,
    ) -> list[FileReview] | None:
        """The reviews from one batch run; None when ruff crashed on it (retry file by file)."""
        items = _check_items(check)
        if isinstance(items, str) or fmt.returncode not in (0, 1, 2) or _PANIC.search(fmt.stderr):
            return None
        findings = self._findings(items, name_of)
        diffs = {str(Path(p).resolve()): d for p, d in _split_diffs(fmt.stdout).items()}
        reviews = []
        for path, name in zip(files, names, strict=True):
            if name in errors:
                reviews.append(unreadable(name, errors[name]))
                continue
            diff = diffs.get(str(path.resolve()), "")
            if diff:
                diff = f"--- a/{name}\n+++ b/{name}\n" + diff
            reviews.append(
                FileReview(
                    file=name,
                    formatted=not diff,
                    diff=diff,
                    findings=sorted(
                        findings.get(name, []), key=lambda f: (f.line, f.column, f.code)
                    ),
                )
            )
        return reviews

    def review_files(self, files: Sequence[Path], names: Sequence[str]) -> list[FileReview]:
        """Many files: one ``ruff check`` and one ``ruff format --diff`` over all of them."""
        errors, name_of, paths = self._prepare(files, names)
        if not paths:
            return [unreadable(n, errors[n]) for n in names]
        check = _run([*self._check_args(None), *paths])
        fmt = _run(self._diff_args(paths))
        batch = self._batch(files, names, errors, name_of, check, fmt)
        if batch is not None:
            return batch
        return [review_file(self, f, n) for f, n in zip(files, names, strict=True)]

    async def areview_files(self, files: Sequence[Path], names: Sequence[str]) -> list[FileReview]:
        """``review_files`` with asyncio subprocesses, killed if the task is cancelled."""
        errors, name_of, paths = self._prepare(files, names)
        if not paths:
            return [unreadable(n, errors[n]) for n in names]
        check, fmt = await _all(
            _arun([*self._check_args(None), *paths]), _arun(self._diff_args(paths))
        )
        batch = self._batch(files, names, errors, name_of, check, fmt)
        if batch is not None:
            return batch
        # ruff crashed on one of them (it aborts the whole run): file by file, so the crash is
        # that file's alone.
        limit = asyncio.Semaphore(os.cpu_count() or 1)

        async def one(path: Path, name: str) -> FileReview:
            async with limit:
                try:
                    source = read_source(path, self.config.max_source_bytes)
                except Unreadable as exc:
                    return unreadable(name, str(exc))
                return await self.areview(source, name)

        return await _all(*(one(f, n) for f, n in zip(files, names, strict=True)))

    def close(self) -> None:
        return None


def _split_diffs(text: str) -> dict[str, str]:
    """``ruff format --diff`` output -> {path: hunks} (headers dropped, re-added by the caller)."""
    out: dict[str, str] = {}
    lines = text.splitlines(keepends=True)
    current: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.startswith("--- ") and nxt.startswith("+++ ") and line[4:] == nxt[4:]:
            current = line[4:].rstrip("\n")
            out[current] = ""
            i += 2
            continue
        if current is not None and line != "\n":  # a bare newline separates two files
            out[current] += line
        i += 1
    return out


def make_backend(
    config: ReviserConfig, name: str | None = None, runner: Runner | None = None
) -> Backend:
    """The configured back-end (or ``name``); ``runner`` runs black + pyflakes' async work in
    killable worker processes (``api.run_in_process`` bound to ``ctx.kernel``)."""
    chosen = name or config.backend
    if chosen == "ruff":
        return Ruff(config)
    return BlackPyflakes(config, runner)
