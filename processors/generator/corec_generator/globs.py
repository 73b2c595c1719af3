"""gitignore rules for every glob of the generator (docs/generator.md, "Globs").

``exclude_patterns`` (config), a template manifest's ``exclude``, ``skip_if_exists`` and
``conditional`` keys all mean what the same lines would mean in a ``.gitignore`` at the root of
the project (of the template set, for ``conditional``), decided the way ``git check-ignore``
decides it:

* each pattern is compiled by pathspec (its gitignore pattern class, the gitwildmatch rules):
  ``*``, ``?`` and ``[...]`` stay within a folder, ``**`` spans folders, ``\\`` escapes, a
  leading ``!`` negates, ``#`` starts a comment, a pattern with a ``/`` at its start or in its
  middle is anchored to the root, one without matches at any depth, and a trailing ``/``
  matches folders only;
* a path is matched when one of its folders is (everything below a matched folder is, and a
  later ``!`` cannot take a file back out of it, as in git); otherwise the last pattern that
  matches the path itself decides, so ``!README.md`` after ``*.md`` takes ``README.md`` back.

pathspec alone matches a file against the patterns; git walks folders first. This module walks
the folders of a path itself and asks each pattern whether it matches that exact path (not one of
its parents), which is what makes the two agree (``tests/generator/test_gen_globs.py`` compares
the decisions with ``git check-ignore``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import pathspec

#: The named group pathspec's gitignore regexes use for "matched a parent folder of the path"
#: (its own GitIgnoreSpec reads the same group): such a match is not a match of the path itself.
_PARENT_GROUP = "ps_d"


class GlobError(ValueError):
    """A pattern git would not use (a lone ``!``, a trailing ``\\``, a bad ``[z-a]`` range)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled gitignore line."""

    pattern: str
    include: bool  # False for a negated (``!``) pattern
    dir_only: bool  # the line ended with ``/``
    regex: re.Pattern[str]

    def matches(self, path: str, *, is_dir: bool) -> bool:
        """Whether this line matches ``path`` itself (not through one of its parent folders)."""
        if self.dir_only and not is_dir:
            return False
        found = self.regex.match(path)
        return found is not None and not found.groupdict().get(_PARENT_GROUP)


def _strip_trailing_spaces(line: str) -> str:
    # git drops trailing spaces unless the last one is quoted with a backslash.
    while line.endswith(" ") and not line.endswith("\\ "):
        line = line[:-1]
    return line


def compile_rule(pattern: str) -> Rule | None:
    """The rule of one gitignore line; ``None`` for a blank line or a comment.

    Raises :class:`GlobError` for a line git cannot use.
    """
    if "\x00" in pattern or "\n" in pattern or "\r" in pattern:
        raise GlobError(f"{pattern!r}: a pattern is one line without NUL")
    line = _strip_trailing_spaces(pattern)
    dir_only = line.endswith("/")
    body = line[:-1] if dir_only else line
    if not body:  # "/": git matches nothing with it
        return None
    try:
        spec = pathspec.GitIgnoreSpec.from_lines([body])
    except (ValueError, re.error) as exc:
        raise GlobError(f"{pattern!r} is not a valid gitignore pattern: {exc}") from None
    compiled = spec.patterns[0] if spec.patterns else None
    if not isinstance(compiled, pathspec.RegexPattern) or compiled.include is None:
        return None  # a comment, or a pattern that matches nothing
    if compiled.regex is None:
        return None
    return Rule(pattern, bool(compiled.include), dir_only, compiled.regex)


def glob_problem(pattern: object) -> str | None:
    """Why ``pattern`` is not a usable gitignore line, or ``None`` when it is."""
    if not isinstance(pattern, str) or not pattern.strip() or len(pattern) > 256:
        return f"{pattern!r} is not a usable glob (a gitignore line of 1 to 256 characters)"
    try:
        compile_rule(pattern)
    except GlobError as exc:
        return str(exc)
    return None


class Globs:
    """An ordered list of gitignore lines: ``match(path)`` says whether they select a file.

    Paths are relative, with ``/`` between folders, and name files (every segment but the last is
    a folder). Get one with :func:`globs`, which keeps the compiled lists.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        rules = [compile_rule(p) for p in self.patterns]
        self.rules = tuple(r for r in rules if r is not None)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def _decide(self, path: str, *, is_dir: bool) -> bool:
        matched = False
        for rule in self.rules:
            if rule.matches(path, is_dir=is_dir):
                matched = rule.include  # the last matching line decides
        return matched

    def match(self, path: str) -> bool:
        """Whether the file ``path`` is selected, exactly as git would decide it.

        Its folders are decided first, from the top: when one is selected, so is everything
        below it. Otherwise the last line that matches the file itself decides.
        """
        if not self.rules:
            return False
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            if self._decide("/".join(parts[:depth]), is_dir=True):
                return True
        return self._decide("/".join(parts), is_dir=False)


@lru_cache(maxsize=256)
def _cached(patterns: tuple[str, ...]) -> Globs:
    return Globs(patterns)


def globs(patterns: Iterable[str]) -> Globs:
    """The compiled :class:`Globs` of ``patterns`` (cached per tuple of lines)."""
    return _cached(tuple(patterns))


def matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether the gitignore lines ``patterns`` select the file ``path``."""
    return globs(patterns).match(path)
