"""The two review back-ends behind one interface: ``review(source, name) -> FileReview``.

* ``black+pyflakes`` (the original CoreC guide's): library calls in-process. CPU-bound pure
  Python, so callers run it off the event loop (a thread for one source, processes for many
  files).
* ``ruff``: the ruff binary shipped in its wheel, fed the source on stdin (``format`` for the
  formatter's verdict, ``check --select F`` for the pyflakes rules), isolated from the reviewed
  tree's own ruff configuration unless ``ruff_isolated`` is off. For many files it is run once
  over all of them.

Where the two differ (tested in tests/reviser/test_backends.py): ruff honours ``# noqa``
comments, pyflakes does not; ruff reports syntax errors as ``E999``-like ``invalid-syntax``
findings with its own wording; a few pyflakes-only messages (doctest checks, some
``%``-format cases) have no ruff counterpart in the F rules and vice versa.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from .config import ReviserConfig
from .findings import FileReview, Finding, severity_of

PYFLAKES_CODES = {
    "UnusedImport": "F401",
    "ImportShadowedByLoopVar": "F402",
    "ImportStarUsed": "F403",
    "LateFutureImport": "F404",
    "ImportStarUsage": "F405",
    "ImportStarNotPermitted": "F406",
    "FutureFeatureNotDefined": "F407",
    "PercentFormatInvalidFormat": "F501",
    "PercentFormatExpectedMapping": "F502",
    "PercentFormatExpectedSequence": "F503",
    "PercentFormatExtraNamedArguments": "F504",
    "PercentFormatMissingArgument": "F505",
    "PercentFormatMixedPositionalAndNamed": "F506",
    "PercentFormatPositionalCountMismatch": "F507",
    "PercentFormatStarRequiresSequence": "F508",
    "PercentFormatUnsupportedFormatCharacter": "F509",
    "StringDotFormatInvalidFormat": "F521",
    "StringDotFormatExtraNamedArguments": "F522",
    "StringDotFormatExtraPositionalArguments": "F523",
    "StringDotFormatMissingArgument": "F524",
    "StringDotFormatMixingAutomatic": "F525",
    "FStringMissingPlaceholders": "F541",
    "TStringMissingPlaceholders": "F542",
    "MultiValueRepeatedKeyLiteral": "F601",
    "MultiValueRepeatedKeyVariable": "F602",
    "TooManyExpressionsInStarredAssignment": "F621",
    "TwoStarredExpressions": "F622",
    "AssertTuple": "F631",
    "IsLiteral": "F632",
    "InvalidPrintSyntax": "F633",
    "IfTuple": "F634",
    "BreakOutsideLoop": "F701",
    "ContinueOutsideLoop": "F702",
    "YieldOutsideFunction": "F704",
    "ReturnOutsideFunction": "F706",
    "DefaultExceptNotLast": "F707",
    "DoctestSyntaxError": "F721",
    "ForwardAnnotationSyntaxError": "F722",
    "RedefinedWhileUnused": "F811",
    "UndefinedName": "F821",
    "UndefinedExport": "F822",
    "UndefinedLocal": "F823",
    "DuplicateArgument": "F831",
    "UnusedVariable": "F841",
    "UnusedAnnotation": "F842",
    "UnusedIndirectAssignment": "F843",
    "RaiseNotImplemented": "F901",
}


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


# --------------------------------------------------------------------------- black + pyflakes


class _Collector:
    """A pyflakes reporter that keeps messages instead of printing them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.findings: list[Finding] = []

    def unexpectedError(self, filename: str, msg: str) -> None:  # noqa: N802 - pyflakes API
        self.findings.append(Finding(file=self.name, line=1, column=1, code="E902", message=msg))

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
        code = PYFLAKES_CODES.get(type(message).__name__, "F999")
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


class BlackPyflakes:
    name = "black+pyflakes"

    def __init__(self, config: ReviserConfig) -> None:
        self.config = config

    def review(self, source: str, name: str, *, fix: bool = False) -> FileReview:
        import black
        from pyflakes.api import check  # type: ignore[import-untyped]

        collector = _Collector(name)
        check(source, name, collector)
        findings = sorted(collector.findings, key=lambda f: (f.line, f.column, f.code))
        try:
            formatted = black.format_str(
                source, mode=black.Mode(line_length=self.config.line_length)
            )
        except Exception as exc:  # noqa: BLE001 - black raises its own errors for bad syntax
            return verdict(name, source, None, findings, fix, parse_error=str(exc))
        return verdict(name, source, formatted, findings, fix)

    async def areview(self, source: str, name: str, *, fix: bool = False) -> FileReview:
        return await asyncio.to_thread(self.review, source, name, fix=fix)

    def review_files(self, files: Sequence[Path], names: Sequence[str]) -> list[FileReview]:
        """Many files: one process per core (black and pyflakes hold the GIL)."""
        jobs = self.config.jobs or None
        if len(files) < 4 or jobs == 1:
            return [review_file(self, f, n) for f, n in zip(files, names, strict=True)]
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            chunks = max(1, len(files) // ((jobs or 2) * 4))
            args = [
                (self.config.model_dump(mode="json"), str(f), n)
                for f, n in zip(files, names, strict=True)
            ]
            return list(pool.map(_review_in_process, args, chunksize=chunks))


def _review_in_process(args: tuple[dict[str, Any], str, str]) -> FileReview:
    config, path, name = args
    return review_file(BlackPyflakes(ReviserConfig.model_validate(config)), Path(path), name)


def read_problem(path: Path, config: ReviserConfig) -> str | None:
    """Why ``path`` cannot be reviewed (unreadable, too large, not UTF-8), or None."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return exc.strerror or str(exc)
    if len(data) > config.max_source_bytes:
        return f"{len(data)} bytes, over max_source_bytes={config.max_source_bytes}"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    return None


def review_file(backend: Backend, path: Path, name: str) -> FileReview:
    """Read and review one file (unreadable or oversized files get ``error``)."""
    limit = getattr(getattr(backend, "config", None), "max_source_bytes", None)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileReview(file=name, formatted=True, error=exc.strerror or str(exc))
    if limit is not None and len(data) > limit:
        return FileReview(
            file=name, formatted=True, error=f"{len(data)} bytes, over max_source_bytes={limit}"
        )
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError:
        return FileReview(file=name, formatted=True, error="not UTF-8 text")
    return backend.review(source, name)


# --------------------------------------------------------------------------- ruff


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

    def _findings(
        self, raw: str, name_of: dict[str, str] | None = None
    ) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = {}
        for item in json.loads(raw or "[]"):
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

    def _verdict(self, source: str, name: str, fmt: Any, check: Any, fix: bool) -> FileReview:
        # Everything a stdin run reports is about that one source (ruff may show the
        # --stdin-filename made absolute).
        findings = sorted(
            (
                f.model_copy(update={"file": name})
                for fs in self._findings(check).values()
                for f in fs
            ),
            key=lambda f: (f.line, f.column, f.code),
        )
        code, formatted = fmt
        # ruff format refuses a file that does not parse (exit code 2)
        return verdict(name, source, formatted if code == 0 else None, findings, fix)

    def review(self, source: str, name: str, *, fix: bool = False) -> FileReview:
        data = source.encode()
        fmt = subprocess.run(self._format_args(name), input=data, capture_output=True, check=False)
        check = subprocess.run(self._check_args(name), input=data, capture_output=True, check=False)
        return self._verdict(
            source, name, (fmt.returncode, fmt.stdout.decode()), check.stdout.decode(), fix
        )

    async def areview(self, source: str, name: str, *, fix: bool = False) -> FileReview:
        """Both ruff runs at once, as asyncio subprocesses (the event loop never blocks)."""
        data = source.encode()

        async def run(args: list[str]) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, _err = await proc.communicate(data)
            return proc.returncode or 0, out.decode()

        fmt, check = await asyncio.gather(run(self._format_args(name)), run(self._check_args(name)))
        return self._verdict(source, name, fmt, check[1], fix)

    def review_files(self, files: Sequence[Path], names: Sequence[str]) -> list[FileReview]:
        """Many files: one ``ruff check`` and one ``ruff format --check`` over all of them."""
        # Unreadable, oversized or non-UTF-8 files get the same error as with the other
        # back-end (ruff alone would skip them with a warning on stderr).
        errors = {
            n: e for f, n in zip(files, names, strict=True) if (e := read_problem(f, self.config))
        }
        name_of = {
            str(f.resolve()): n for f, n in zip(files, names, strict=True) if n not in errors
        }
        paths = [str(f) for f, n in zip(files, names, strict=True) if n not in errors]
        if not paths:
            return [FileReview(file=n, formatted=True, error=errors[n]) for n in names]
        check = subprocess.run(
            [*self._check_args(None), *paths], capture_output=True, check=False, text=True
        )
        findings = self._findings(check.stdout, name_of)
        # One `ruff format --diff` tells which files would change, with their diffs.
        fmt = subprocess.run(
            [self.binary, "format", *self._common(), "--no-cache", "--diff", *paths],
            capture_output=True,
            check=False,
            text=True,
        )
        diffs = {str(Path(p).resolve()): d for p, d in _split_diffs(fmt.stdout).items()}
        reviews = []
        for path, name in zip(files, names, strict=True):
            if name in errors:
                reviews.append(FileReview(file=name, formatted=True, error=errors[name]))
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


def make_backend(config: ReviserConfig, name: str | None = None) -> Backend:
    chosen = name or config.backend
    if chosen == "ruff":
        return Ruff(config)
    return BlackPyflakes(config)
