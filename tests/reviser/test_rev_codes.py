"""Every pyflakes message -> rule code entry of the black+pyflakes back-end, pinned.

Each case is a small source that makes pyflakes itself report the message; the test runs the
back-end's ``review_source`` on it (pyflakes, then the code table) and asserts the finding that
carries pyflakes' text has the code written here, so a changed entry (F811 -> F812) fails.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from typing import Any

import pytest
from corec_reviser.backends import PYFLAKES_CODES, _Collector, review_source
from corec_reviser.config import ReviserConfig
from pyflakes import checker, messages
from pyflakes.api import check

#: 256 names before a starred target: one more than CPython's unpacking opcode can take.
_TOO_MANY = ", ".join(f"a{i}" for i in range(1 << 8))

#: pyflakes message -> (the code the reviser must give it, a source that triggers it).
CASES: dict[str, tuple[str, str]] = {
    "UnusedImport": ("F401", "import os\n"),
    "ImportShadowedByLoopVar": ("F402", "import os\nfor os in range(3):\n    pass\n"),
    "ImportStarUsed": ("F403", "from os import *\n"),
    "LateFutureImport": ("F404", "import os\nfrom __future__ import annotations\nos.sep\n"),
    "ImportStarUsage": ("F405", "from os import *\nprint(sep)\n"),
    "ImportStarNotPermitted": ("F406", "def f():\n    from os import *\n"),
    "FutureFeatureNotDefined": ("F407", "from __future__ import telepathy\n"),
    "PercentFormatInvalidFormat": ("F501", "'%s %' % (1,)\n"),
    "PercentFormatExpectedMapping": ("F502", "'%(a)s' % (1,)\n"),
    "PercentFormatExpectedSequence": ("F503", "'%s %s' % {'a': 1}\n"),
    "PercentFormatExtraNamedArguments": ("F504", "'%(a)s' % {'a': 1, 'b': 2}\n"),
    "PercentFormatMissingArgument": ("F505", "'%(a)s %(b)s' % {'a': 1}\n"),
    "PercentFormatMixedPositionalAndNamed": ("F506", "'%s %(a)s' % {'a': 1}\n"),
    "PercentFormatPositionalCountMismatch": ("F507", "'%s %s' % (1,)\n"),
    "PercentFormatStarRequiresSequence": ("F508", "'%(a)*d' % {'a': 1}\n"),
    "PercentFormatUnsupportedFormatCharacter": ("F509", "'%y' % (1,)\n"),
    "StringDotFormatInvalidFormat": ("F521", "'{'.format(1)\n"),
    "StringDotFormatExtraNamedArguments": ("F522", "'{a}'.format(a=1, b=2)\n"),
    "StringDotFormatExtraPositionalArguments": ("F523", "'{0}'.format(1, 2)\n"),
    "StringDotFormatMissingArgument": ("F524", "'{a} {b}'.format(a=1)\n"),
    "StringDotFormatMixingAutomatic": ("F525", "'{} {0}'.format(1, 2)\n"),
    "FStringMissingPlaceholders": ("F541", "f'plain'\n"),
    "TStringMissingPlaceholders": ("F542", "t'plain'\n"),  # t-strings parse on 3.14+ only
    "MultiValueRepeatedKeyLiteral": ("F601", "{'k': 1, 'k': 2}\n"),
    "MultiValueRepeatedKeyVariable": ("F602", "k = 'x'\n{k: 1, k: 2}\n"),
    "TooManyExpressionsInStarredAssignment": ("F621", f"{_TOO_MANY}, *rest = range(300)\n"),
    "TwoStarredExpressions": ("F622", "*a, *b = range(3)\n"),
    "AssertTuple": ("F631", "assert (1, 'always')\n"),
    "IsLiteral": ("F632", "x = 1\nx is 'a'\n"),
    "InvalidPrintSyntax": ("F633", "import sys\nprint >> sys.stderr, 'x'\n"),
    "IfTuple": ("F634", "if (1,):\n    pass\n"),
    "BreakOutsideLoop": ("F701", "break\n"),
    "ContinueOutsideLoop": ("F702", "continue\n"),
    "YieldOutsideFunction": ("F704", "yield 1\n"),
    "ReturnOutsideFunction": ("F706", "return 1\n"),
    "DefaultExceptNotLast": (
        "F707",
        "try:\n    pass\nexcept:\n    pass\nexcept ValueError:\n    pass\n",
    ),
    # pyflakes checks doctests only when asked (withDoctest): see test_doctest_syntax_error.
    "DoctestSyntaxError": ("F721", "def f():\n    '''\n    >>> 1 +\n    '''\n"),
    "ForwardAnnotationSyntaxError": ("F722", "def f(x: '1 +') -> None:\n    pass\n"),
    "RedefinedWhileUnused": ("F811", "import os\nimport os\n"),
    "UndefinedName": ("F821", "print(nowhere)\n"),
    "UndefinedExport": ("F822", "__all__ = ['nowhere']\n"),
    "UndefinedLocal": ("F823", "x = 1\ndef f():\n    print(x)\n    x = 2\n"),
    "DuplicateArgument": ("F831", "def f(a, a):\n    pass\n"),
    "UnusedVariable": ("F841", "def f():\n    x = 1\n"),
    "UnusedAnnotation": ("F842", "def f():\n    x: int\n"),
    # flake8's code (pyflakes itself numbers nothing; flake8's table is the reference).
    "UnusedIndirectAssignment": ("F824", "def f():\n    global g\n"),
    # Lazy imports (PEP 810) parse on Python 3.15+ only.
    "LazyImportNotAtModuleScope": ("F708", "def f():\n    lazy import os\n"),
    "LazyImportStarNotPermitted": ("F709", "lazy from os import *\n"),
    "EagerUseOfLazyImport": ("F851", "lazy import os\nos.sep\n"),
    "RaiseNotImplemented": ("F901", "raise NotImplemented\n"),
}

NEEDS_DOCTEST = {"DoctestSyntaxError"}
#: Messages about syntax new in Python 3.14 (t-strings) and 3.15 (lazy imports), with the
#: extra arguments pyflakes builds them with, and those this Python cannot parse.
SYNTAX_3_14: dict[str, Callable[[ast.stmt], tuple[Any, ...]]] = {
    "TStringMissingPlaceholders": lambda _node: (),
}
SYNTAX_3_15: dict[str, Callable[[ast.stmt], tuple[Any, ...]]] = {
    "LazyImportNotAtModuleScope": lambda _node: (),
    "LazyImportStarNotPermitted": lambda _node: ("os",),
    "EagerUseOfLazyImport": lambda node: ("os", node),  # the name, where it was imported
}
UNPARSABLE = {
    **(SYNTAX_3_14 if sys.version_info < (3, 14) else {}),
    **(SYNTAX_3_15 if sys.version_info < (3, 15) else {}),
}


class _Messages:
    """A pyflakes reporter that keeps the raw messages (to know what pyflakes said)."""

    def __init__(self) -> None:
        self.flakes: list[Any] = []

    def flake(self, message: Any) -> None:
        self.flakes.append(message)

    def syntaxError(self, *args: Any) -> None:  # noqa: N802 - pyflakes API
        raise AssertionError(f"the case does not parse: {args}")

    def unexpectedError(self, *args: Any) -> None:  # noqa: N802 - pyflakes API
        raise AssertionError(f"pyflakes failed: {args}")


def _text(message: Any) -> str:
    return str(message.message % message.message_args)


def test_every_entry_of_the_table_has_a_case() -> None:
    assert set(CASES) == set(PYFLAKES_CODES)


@pytest.mark.parametrize("name", sorted(set(CASES) - NEEDS_DOCTEST - set(UNPARSABLE)))
def test_pyflakes_message_gets_its_code(name: str) -> None:
    code, source = CASES[name]
    raw = _Messages()
    check(source, "case.py", raw)
    said = [(m.lineno, _text(m)) for m in raw.flakes if type(m).__name__ == name]
    assert said, f"pyflakes did not report {name}: {[type(m).__name__ for m in raw.flakes]}"
    review = review_source(ReviserConfig(), source, "case.py")
    got = {(f.line, f.message): f.code for f in review.findings}
    for line, text in said:
        assert got.get((line, text)) == code, (name, text, review.findings)


def test_doctest_syntax_error() -> None:
    """pyflakes reports doctest errors only with ``withDoctest`` (the reviser does not turn it
    on): run pyflakes with it, and give its messages to the back-end's own reporter."""
    code, source = CASES["DoctestSyntaxError"]
    found = checker.Checker(ast.parse(source), filename="case.py", withDoctest=True).messages
    wanted = [m for m in found if isinstance(m, messages.DoctestSyntaxError)]
    assert wanted, found
    collector = _Collector("case.py")
    for message in wanted:
        collector.flake(message)
    assert [(f.code, f.message) for f in collector.findings] == [(code, _text(m)) for m in wanted]


def test_messages_about_syntax_this_python_does_not_parse() -> None:
    """No source can make pyflakes report these here: the real pyflakes message classes, built
    as pyflakes builds them (file name, a node for the position), go through the back-end's
    reporter. On a Python that parses the syntax, the parametrized test runs them for real."""
    for name, extra in sorted(UNPARSABLE.items()):
        if not hasattr(messages, name):
            continue  # an older pyflakes (4.0 on 3.10) has no such message: it never says it
        code, _source = CASES[name]
        node = ast.parse("x").body[0]  # any node: pyflakes reads lineno and col_offset
        message = getattr(messages, name)("case.py", node, *extra(node))
        collector = _Collector("case.py")
        collector.flake(message)
        assert [(f.code, f.message) for f in collector.findings] == [(code, _text(message))]
