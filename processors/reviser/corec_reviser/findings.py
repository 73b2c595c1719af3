"""The one result model both back-ends produce, and its text, JSON and SARIF renderings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from . import __version__

if TYPE_CHECKING:
    from .rules import Rule

Severity = Literal["error", "warning", "note"]

# Undefined names and syntax errors break at run time; the rest are warnings.
ERROR_CODES = {"E999", "F821", "F822", "F823", "F633", "F701", "F702", "F704", "F706", "F707"}


class Finding(BaseModel):
    file: str
    line: int
    column: int = Field(description="1-based")
    code: str
    message: str
    severity: Severity = "warning"


ErrorKind = Literal["read", "crash"]


class FileReview(BaseModel):
    file: str
    formatted: bool = Field(description="True when the formatter would change nothing")
    diff: str = ""
    findings: list[Finding] = Field(default_factory=list)
    fixed: str | None = Field(default=None, description="the formatted text, when asked with fix")
    error: str | None = Field(default=None, description="why the file could not be reviewed")
    error_kind: ErrorKind | None = Field(
        default=None,
        description="read: unreadable, too large, not UTF-8 or not a regular file; "
        "crash: a linter crashed on it (the file is not reviewed, so never clean)",
    )


def unreadable(name: str, reason: str) -> FileReview:
    """The review of a file that could not be read."""
    return FileReview(file=name, formatted=True, error=reason, error_kind="read")


def crashed(name: str, reason: str) -> FileReview:
    """The review of a file a linter crashed on: an error, never a clean verdict."""
    return FileReview(file=name, formatted=True, error=reason, error_kind="crash")


class Review(BaseModel):
    backend: str
    files: list[FileReview]
    suggestions: list[str] | None = None

    @property
    def findings(self) -> list[Finding]:
        return [f for review in self.files for f in review.findings]

    @property
    def clean(self) -> bool:
        return all(r.formatted and not r.findings and not r.error for r in self.files)

    def summary(self) -> dict[str, int]:
        return {
            "files": len(self.files),
            "findings": len(self.findings),
            "unformatted": sum(1 for r in self.files if not r.formatted),
            "errors": sum(1 for r in self.files if r.error),
        }


def severity_of(code: str) -> Severity:
    return "error" if code in ERROR_CODES else "warning"


def to_text(review: Review) -> str:
    lines = []
    for file in review.files:
        if file.error:
            what = "linter crashed" if file.error_kind == "crash" else "cannot review"
            lines.append(f"{file.file}: {what}: {file.error}")
        for f in file.findings:
            lines.append(f"{f.file}:{f.line}:{f.column}: {f.code} {f.message}")
        if not file.formatted:
            lines.append(f"{file.file}: would reformat")
    s = review.summary()
    lines.append(
        f"{s['files']} file(s): {s['findings']} finding(s), {s['unformatted']} to reformat"
        + (f", {s['errors']} not reviewed" if s["errors"] else "")
        + f" ({review.backend})"
    )
    return "\n".join(lines)


def to_json(review: Review) -> dict[str, Any]:
    return {**review.model_dump(mode="json"), "summary": review.summary(), "clean": review.clean}


#: The SARIF ``level`` of each severity.
SARIF_LEVELS: dict[Severity, str] = {"error": "error", "warning": "warning", "note": "note"}
#: The rule of the "would reformat" results.
FORMAT_RULE = "format"


def to_sarif(
    review: Review, root: str | None = None, ruff_rules: Mapping[str, Rule] | None = None
) -> dict[str, Any]:
    """SARIF 2.1.0, as GitHub code scanning and other SARIF consumers accept it (the tests
    validate it against the OASIS schema).

    File URIs are relative to ``SRCROOT``, which is ``root`` (a ``file://`` URI ending in ``/``)
    when given. Each rule is described by its own metadata (:mod:`corec_reviser.rules`);
    ``ruff_rules`` is ruff's catalogue, looked up from the installed ruff when ``None``.
    """
    rules, results = sarif_results(review, ruff_rules)
    # Files that were not reviewed (unreadable, or a linter crashed on them) are no results:
    # they are the tool's own notifications, and a crash marks the run unsuccessful.
    invocation = {
        "executionSuccessful": not any(f.error_kind == "crash" for f in review.files),
        "toolExecutionNotifications": [sarif_notification(f) for f in review.files if f.error],
    }
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "corec-reviser",
                        "version": __version__,
                        "informationUri": "https://pypi.org/project/corec-reviser/",
                        "rules": rules,
                    }
                },
                "invocations": [invocation],
                "originalUriBaseIds": {"SRCROOT": {"uri": root or "file:///"}},
                "results": results,
            }
        ],
    }


def sarif_results(
    review: Review, ruff_rules: Mapping[str, Rule] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The SARIF rules (each code once, in order of first use) and results of ``review``.

    A finding is a result of its code's rule, with the finding's own message; a file to
    reformat, one of the ``format`` rule. A rule is described by its own name, summary and help
    (:func:`corec_reviser.rules.rule_for`), never by a finding's message.
    """
    from .rules import installed_ruff_rules, rule_for

    if ruff_rules is None and review.backend == "ruff":
        ruff_rules = installed_ruff_rules()
    codes: list[str] = []
    results: list[dict[str, Any]] = []
    for file in review.files:
        for f in file.findings:
            codes.append(f.code)
            results.append(
                sarif_result(f.code, SARIF_LEVELS[f.severity], f.message, f.file, f.line, f.column)
            )
        if not file.formatted:
            codes.append(FORMAT_RULE)
            results.append(
                sarif_result(
                    FORMAT_RULE, "note", f"would reformat ({review.backend})", file.file, 1, 1
                )
            )
    rules = [
        rule_for(code, review.backend, ruff_rules).descriptor() for code in dict.fromkeys(codes)
    ]
    return rules, results


def sarif_result(
    rule_id: str, level: str, message: str, file: str, line: int, column: int
) -> dict[str, Any]:
    """A SARIF ``result``: what rule ``rule_id`` found at ``file:line:column``."""
    return {
        "ruleId": rule_id,
        "level": level,
        "message": {"text": message},
        "locations": [sarif_location(file, line, column)],
    }


def sarif_notification(file: FileReview) -> dict[str, Any]:
    """A SARIF tool notification for a file that was not reviewed: an error if a linter crashed."""
    return {
        "level": "error" if file.error_kind == "crash" else "warning",
        "message": {"text": f"{file.file}: {file.error}"},
        "locations": [sarif_location(file.file, 1, 1)],
    }


def sarif_location(file: str, line: int, column: int) -> dict[str, Any]:
    """A SARIF ``location``: ``file`` (relative to ``SRCROOT``) at ``line:column`` (1-based)."""
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": file.replace("\\", "/"), "uriBaseId": "SRCROOT"},
            "region": {"startLine": max(line, 1), "startColumn": max(column, 1)},
        }
    }
