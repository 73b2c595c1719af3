"""What each rule code means: the ``tool.driver.rules`` of the SARIF output (docs/reviser.md).

Every rule is described by its own metadata, never by one of its findings' messages:

* **ruff** back-end: ``ruff rule --all --output-format json``, run once per ruff binary and
  process, gives each rule's name, summary and explanation (Markdown); its help page is
  ruff's documentation page of the rule, ``https://docs.astral.sh/ruff/rules/<name>`` (the
  ``url`` ruff's own JSON findings carry). A code ruff cannot describe falls back to the table
  below (the F rules are pyflakes' messages under flake8's numbers).
* **black+pyflakes** back-end: :data:`PYFLAKES_RULES`, a fixed table of the pyflakes message
  classes the reviser reports, with the code each gets and a short description.
* the reviser's own rules, the same for both: ``E999`` (the source does not parse) and
  ``format`` (the formatter would change the file).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .findings import FORMAT_RULE, SARIF_LEVELS, severity_of

#: ruff's documentation page of a rule, by the rule's name (as in ``ruff check``'s JSON ``url``).
RUFF_RULE_URL = "https://docs.astral.sh/ruff/rules/{name}"

#: pyflakes message class -> (its code, what it reports). pyflakes numbers nothing: the codes
#: are flake8's (and ruff's F rules), the descriptions the reviser's own.
PYFLAKES_RULES: dict[str, tuple[str, str]] = {
    "UnusedImport": ("F401", "A module or name is imported but never used."),
    "ImportShadowedByLoopVar": ("F402", "A loop variable shadows an imported name."),
    "ImportStarUsed": (
        "F403",
        "`from module import *` is used, so undefined names cannot be detected.",
    ),
    "LateFutureImport": ("F404", "A `from __future__` import comes after other statements."),
    "ImportStarUsage": ("F405", "A name may be undefined, or may come from a star import."),
    "ImportStarNotPermitted": ("F406", "`from module import *` is only allowed at module level."),
    "FutureFeatureNotDefined": (
        "F407",
        "A `__future__` import names a feature that does not exist.",
    ),
    "PercentFormatInvalidFormat": ("F501", "A `%`-format string is invalid."),
    "PercentFormatExpectedMapping": (
        "F502",
        "A `%`-format string with named placeholders is given a sequence, not a mapping.",
    ),
    "PercentFormatExpectedSequence": (
        "F503",
        "A `%`-format string with positional placeholders is given a mapping, not a sequence.",
    ),
    "PercentFormatExtraNamedArguments": (
        "F504",
        "A `%`-format mapping has keys that the format string does not use.",
    ),
    "PercentFormatMissingArgument": (
        "F505",
        "A `%`-format string names a placeholder that the mapping does not provide.",
    ),
    "PercentFormatMixedPositionalAndNamed": (
        "F506",
        "A `%`-format string mixes positional and named placeholders.",
    ),
    "PercentFormatPositionalCountMismatch": (
        "F507",
        "A `%`-format string has a different number of placeholders than arguments.",
    ),
    "PercentFormatStarRequiresSequence": (
        "F508",
        "A `*` width or precision in a `%`-format string needs a sequence of arguments.",
    ),
    "PercentFormatUnsupportedFormatCharacter": (
        "F509",
        "A `%`-format string uses a conversion character that does not exist.",
    ),
    "StringDotFormatInvalidFormat": ("F521", "A `str.format` string is invalid."),
    "StringDotFormatExtraNamedArguments": (
        "F522",
        "A `str.format` call passes keyword arguments that the string does not use.",
    ),
    "StringDotFormatExtraPositionalArguments": (
        "F523",
        "A `str.format` call passes positional arguments that the string does not use.",
    ),
    "StringDotFormatMissingArgument": (
        "F524",
        "A `str.format` string names a field that the call does not provide.",
    ),
    "StringDotFormatMixingAutomatic": (
        "F525",
        "A `str.format` string mixes automatic (`{}`) and numbered (`{0}`) fields.",
    ),
    "FStringMissingPlaceholders": ("F541", "An f-string has no placeholders."),
    "TStringMissingPlaceholders": ("F542", "A t-string has no placeholders."),
    "MultiValueRepeatedKeyLiteral": (
        "F601",
        "A dictionary literal repeats a key with different values.",
    ),
    "MultiValueRepeatedKeyVariable": (
        "F602",
        "A dictionary literal repeats a variable key with different values.",
    ),
    "TooManyExpressionsInStarredAssignment": (
        "F621",
        "A star-unpacking assignment has more targets than Python can unpack.",
    ),
    "TwoStarredExpressions": ("F622", "An assignment has more than one starred target."),
    "AssertTuple": ("F631", "An `assert` tests a non-empty tuple, which is always true."),
    "IsLiteral": ("F632", "`is` or `is not` compares with a literal; use `==` or `!=`."),
    "InvalidPrintSyntax": ("F633", "`print >>` is Python 2 syntax."),
    "IfTuple": ("F634", "An `if` tests a non-empty tuple, which is always true."),
    "BreakOutsideLoop": ("F701", "`break` outside a loop."),
    "ContinueOutsideLoop": ("F702", "`continue` outside a loop."),
    "YieldOutsideFunction": ("F704", "`yield` or `yield from` outside a function."),
    "ReturnOutsideFunction": ("F706", "`return` outside a function."),
    "DefaultExceptNotLast": ("F707", "A bare `except:` comes before other `except` clauses."),
    "LazyImportNotAtModuleScope": ("F708", "A `lazy import` is only allowed at module level."),
    "LazyImportStarNotPermitted": ("F709", "`lazy from module import *` is not allowed."),
    "DoctestSyntaxError": ("F721", "A doctest example has a syntax error."),
    "ForwardAnnotationSyntaxError": ("F722", "A string annotation has a syntax error."),
    "RedefinedWhileUnused": (
        "F811",
        "A name is defined again before its first definition is used.",
    ),
    "UndefinedName": ("F821", "A name is used but never defined."),
    "UndefinedExport": ("F822", "`__all__` lists a name that the module does not define."),
    "UndefinedLocal": (
        "F823",
        "A local variable is used before it is assigned (it shadows a global of the same name).",
    ),
    "DuplicateArgument": ("F831", "A function has two arguments of the same name."),
    "UnusedIndirectAssignment": (
        "F824",
        "A `global` or `nonlocal` statement names a variable that its scope never assigns.",
    ),
    "UnusedVariable": ("F841", "A local variable is assigned but never used."),
    "UnusedAnnotation": ("F842", "A local variable is annotated but never used."),
    "EagerUseOfLazyImport": (
        "F851",
        "A lazily imported name is used while the module is imported, which loads it eagerly.",
    ),
    "RaiseNotImplemented": (
        "F901",
        "`raise NotImplemented` should be `raise NotImplementedError`.",
    ),
}

#: pyflakes message class -> rule code (what the black+pyflakes back-end reports).
PYFLAKES_CODES: dict[str, str] = {cls: code for cls, (code, _) in PYFLAKES_RULES.items()}
#: The code of a pyflakes message class missing from the table (a newer pyflakes).
UNKNOWN_PYFLAKES = "F999"

_PYFLAKES_BY_CODE = {code: cls for cls, code in PYFLAKES_CODES.items()}
_FORMATTERS = {"ruff": "ruff format", "black+pyflakes": "black"}


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule as SARIF describes it (a ``reportingDescriptor``)."""

    id: str
    name: str
    summary: str  # shortDescription
    description: str = ""  # fullDescription: what the rule checks, plain text
    help: str = ""  # help.text
    help_markdown: str = ""  # help.markdown (ruff's explanations are Markdown)
    help_uri: str | None = None

    def descriptor(self) -> dict[str, Any]:
        """The SARIF ``reportingDescriptor`` of this rule."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "shortDescription": {"text": self.summary},
        }
        if self.description:
            out["fullDescription"] = {"text": self.description}
        if self.help:
            out["help"] = {"text": self.help}
            if self.help_markdown:
                out["help"]["markdown"] = self.help_markdown
        if self.help_uri:
            out["helpUri"] = self.help_uri
        level = "note" if self.id == FORMAT_RULE else SARIF_LEVELS[severity_of(self.id)]
        out["defaultConfiguration"] = {"level": level}
        return out


def own_rule(code: str, backend: str) -> Rule | None:
    """The reviser's own rules: ``E999`` and ``format`` (``None`` for any other code)."""
    if code == "E999":
        return Rule(
            "E999",
            "syntax-error",
            "The source does not parse.",
            help="The file is not valid Python for the parser of the back-end "
            f"({backend}). Nothing else in it is reliably checked, and it is never reformatted "
            "or rewritten until it parses.",
        )
    if code == FORMAT_RULE:
        formatter = _FORMATTERS.get(backend, backend)
        return Rule(
            FORMAT_RULE,
            "format",
            "The file is not formatted.",
            help=f"The formatter ({formatter}) would change this file. `corec-kit reviser review "
            "--fix` writes the formatted text back; `--diff` shows the change.",
        )
    return None


def pyflakes_rule(code: str) -> Rule | None:
    """The rule of a pyflakes message code, from :data:`PYFLAKES_RULES`."""
    if code == UNKNOWN_PYFLAKES:
        return Rule(
            code,
            "pyflakes",
            "A pyflakes message that the reviser has no code for.",
            help="pyflakes reported a message class missing from the reviser's table (a newer "
            "pyflakes); the result's message says what it is.",
        )
    cls = _PYFLAKES_BY_CODE.get(code)
    if cls is None:
        return None
    description = PYFLAKES_RULES[cls][1]
    return Rule(code, cls, description, help=f"{description} pyflakes reports it as {cls}.")


def _ruff_rule(item: Any) -> Rule | None:
    if not isinstance(item, dict):
        return None
    code, name = item.get("code"), item.get("name")
    if not isinstance(code, str) or not code or not isinstance(name, str) or not name:
        return None  # preview rules without a code yet
    summary = item.get("summary")
    explanation = item.get("explanation")
    explanation = explanation.strip() if isinstance(explanation, str) else ""
    return Rule(
        code,
        name,
        summary if isinstance(summary, str) and summary else name,
        description=what_it_does(explanation),
        help=explanation,
        help_markdown=explanation,
        help_uri=RUFF_RULE_URL.format(name=name),
    )


_WHAT_IT_DOES = re.compile(r"^## What it does[ \t]*\n(.*?)(?=^## |\Z)", re.MULTILINE | re.DOTALL)


def what_it_does(explanation: str) -> str:
    """The "What it does" section of a ruff explanation, as one line of text ("" if none)."""
    found = _WHAT_IT_DOES.search(explanation)
    return " ".join(found.group(1).split()) if found else ""


@lru_cache(maxsize=4)
def ruff_rules(binary: str) -> Mapping[str, Rule]:
    """Every rule ``binary`` knows, by code (``ruff rule --all``, once per binary and process).

    Empty when ruff cannot say (it is missing, fails or prints no JSON list): the callers fall
    back to the pyflakes table.
    """
    try:
        ran = subprocess.run(
            [binary, "rule", "--all", "--output-format", "json"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if ran.returncode != 0:
        return {}
    try:
        items = json.loads(ran.stdout)
    except ValueError:
        return {}
    if not isinstance(items, list):
        return {}
    return {rule.id: rule for rule in map(_ruff_rule, items) if rule is not None}


def ruff_binary() -> str | None:
    """The ruff binary of the installed ruff wheel (the one the ruff back-end runs)."""
    try:
        from ruff.__main__ import find_ruff_bin  # type: ignore[import-untyped]

        return str(find_ruff_bin())
    except (ImportError, OSError):  # find_ruff_bin raises FileNotFoundError when it is missing
        return None


def installed_ruff_rules() -> Mapping[str, Rule]:
    """:func:`ruff_rules` of the installed ruff (empty when it is missing)."""
    binary = ruff_binary()
    return ruff_rules(binary) if binary else {}


def rule_for(code: str, backend: str, ruff: Mapping[str, Rule] | None = None) -> Rule:
    """How ``code`` is described in a review made by ``backend``.

    ``ruff`` is ruff's catalogue (:func:`ruff_rules`), used for the ruff back-end; ``None``
    looks up the installed ruff's.
    """
    own = own_rule(code, backend)
    if own is not None:
        return own
    if backend == "ruff":
        found = (installed_ruff_rules() if ruff is None else ruff).get(code)
        if found is not None:
            return found
    found = pyflakes_rule(code)
    if found is not None:
        return found
    return Rule(code, code, f"Rule {code} of {backend}.")
