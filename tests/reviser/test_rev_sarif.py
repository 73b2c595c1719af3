"""SARIF output: valid against the official SARIF 2.1.0 JSON Schema, for both back-ends, with
findings (lint, a syntax error, a file to reformat, an unreadable file) and with none; and each
rule described by its own metadata (ruff's ``ruff rule`` for the ruff back-end, the pyflakes
table for black+pyflakes), never by a finding's message.

The schema file, ``sarif-schema-2.1.0.json`` beside this test, is the OASIS SARIF TC's own,
unchanged: ``sarif-2.1/schema/sarif-schema-2.1.0.json`` of https://github.com/oasis-tcs/sarif-spec
(taken at commit e0583813964ec43cea53b6b531b402866095ed1f; the file was last changed in
a560296ca8c921f3bdb8d4a8db57ab83dae968a7). Its ``id`` is the published OASIS Standard's,
https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json, and
its ``$schema`` is JSON Schema draft-04, so jsonschema validates with ``Draft4Validator``
(``validator_for`` reads it from the file). The SHA-256 below pins it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from corec_reviser.findings import FileReview, Finding, Review, to_sarif
from corec_reviser.rules import (
    PYFLAKES_CODES,
    PYFLAKES_RULES,
    ruff_binary,
    ruff_rules,
    rule_for,
    what_it_does,
)
from pyflakes import messages

pytestmark = pytest.mark.timeout(180)

SCHEMA_FILE = Path(__file__).with_name("sarif-schema-2.1.0.json")
SCHEMA_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"
BACKENDS = ["ruff", "black+pyflakes"]


@pytest.fixture(scope="module")
def validator() -> Any:
    data = SCHEMA_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SCHEMA_SHA256, "the schema file was changed"
    schema = json.loads(data)
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft4Validator  # what the schema's own $schema names
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def assert_valid(validator: Any, doc: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:10]
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad.py").write_text("import os\nx=undefined\n")  # F401, F821, would reformat
    (src / "broken.py").write_text("def f(:\n    pass\n")  # E999
    (src / "latin1.py").write_bytes(b"s = '\xe9'\n")  # not UTF-8: a tool notification
    (src / "good.py").write_text("print(1)\n")
    return tmp_path


def sarif(kit: Any, *args: str) -> dict[str, Any]:
    out = kit("reviser", "review", *args, "--format", "sarif", "--no-progress")
    assert out.returncode in (0, 1), out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


@pytest.mark.parametrize("backend", BACKENDS)
def test_sarif_with_findings_is_valid(validator: Any, kit: Any, tree: Path, backend: str) -> None:
    doc = sarif(kit, "src", "--backend", backend)
    assert_valid(validator, doc)
    run = doc["runs"][0]
    assert {r["ruleId"] for r in run["results"]} == {"F401", "F821", "E999", "format"}
    (note,) = run["invocations"][0]["toolExecutionNotifications"]
    assert "src/latin1.py" in note["message"]["text"]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert list(rules) == list(dict.fromkeys(r["ruleId"] for r in run["results"]))
    # a rule is described by itself, never by one of its findings' messages
    for result in run["results"]:
        rule = rules[result["ruleId"]]
        assert rule["shortDescription"]["text"] != result["message"]["text"]
    assert rules["E999"]["name"] == "syntax-error"
    assert rules["format"]["name"] == "format"
    assert rules["format"]["defaultConfiguration"] == {"level": "note"}
    assert rules["F821"]["defaultConfiguration"] == {"level": "error"}
    assert rules["F401"]["defaultConfiguration"] == {"level": "warning"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_sarif_without_findings_is_valid(
    validator: Any, kit: Any, tree: Path, backend: str
) -> None:
    doc = sarif(kit, "src/good.py", "--backend", backend)
    assert_valid(validator, doc)
    run = doc["runs"][0]
    assert run["results"] == [] and run["tool"]["driver"]["rules"] == []
    assert run["invocations"] == [{"executionSuccessful": True, "toolExecutionNotifications": []}]


def test_ruff_rules_come_from_ruff_itself(validator: Any, kit: Any, tree: Path) -> None:
    """name, summary and explanation as ``ruff rule CODE`` prints them; helpUri as the ``url``
    of ruff's own JSON findings; the results keep their own messages."""
    doc = sarif(kit, "src", "--backend", "ruff")
    rules = {r["id"]: r for r in doc["runs"][0]["tool"]["driver"]["rules"]}
    binary = ruff_binary()
    assert binary is not None
    check = [binary, "check", "--isolated", "--select", "F", "--output-format", "json"]
    checked = subprocess.run(
        [*check, "--no-cache", "--exit-zero", str(tree / "src" / "bad.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    urls = {item["code"]: item["url"] for item in json.loads(checked.stdout)}
    for code in ("F401", "F821"):
        meta = json.loads(
            subprocess.run(
                [binary, "rule", code, "--output-format", "json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        rule = rules[code]
        assert rule["name"] == meta["name"]
        assert rule["shortDescription"] == {"text": meta["summary"]}
        assert rule["help"] == {
            "text": meta["explanation"].strip(),
            "markdown": meta["explanation"].strip(),
        }
        assert rule["fullDescription"]["text"] == what_it_does(meta["explanation"])
        assert rule["fullDescription"]["text"]  # every F rule explains what it does
        assert rule["helpUri"] == urls[code]
    messages_ = {r["message"]["text"] for r in doc["runs"][0]["results"]}
    assert "Undefined name `undefined`" in messages_


def test_pyflakes_rules_come_from_the_table(validator: Any, kit: Any, tree: Path) -> None:
    doc = sarif(kit, "src", "--backend", "black+pyflakes")
    rules = {r["id"]: r for r in doc["runs"][0]["tool"]["driver"]["rules"]}
    assert rules["F401"]["name"] == "UnusedImport"
    assert rules["F401"]["shortDescription"] == {"text": PYFLAKES_RULES["UnusedImport"][1]}
    assert rules["F821"]["name"] == "UndefinedName"
    assert "helpUri" not in rules["F821"]
    assert rules["format"]["help"]["text"].startswith("The formatter (black)")
    messages_ = {r["message"]["text"] for r in doc["runs"][0]["results"]}
    assert "undefined name 'undefined'" in messages_  # pyflakes' own wording


def test_the_pyflakes_table() -> None:
    """Every pyflakes message class this pyflakes has is in the table, once, with one line."""
    classes = {
        name
        for name, value in vars(messages).items()
        if isinstance(value, type) and issubclass(value, messages.Message)
    } - {"Message"}
    assert classes <= set(PYFLAKES_RULES), classes - set(PYFLAKES_RULES)
    assert len(set(PYFLAKES_CODES.values())) == len(PYFLAKES_CODES)
    for cls, (code, description) in PYFLAKES_RULES.items():
        assert code.startswith("F") and description.endswith(".") and "\n" not in description, cls


def test_without_ruff_metadata_the_table_describes_the_rules(validator: Any) -> None:
    """A ruff that cannot list its rules (here: no such binary) leaves the pyflakes table."""
    assert ruff_rules("/nonexistent/ruff") == {}
    review = Review(
        backend="ruff",
        files=[
            FileReview(
                file="a.py",
                formatted=False,
                findings=[
                    Finding(file="a.py", line=1, column=8, code="F401", message="`os` unused"),
                    Finding(file="a.py", line=2, column=1, code="F999", message="new message"),
                    Finding(file="a.py", line=3, column=1, code="X100", message="other"),
                ],
            )
        ],
    )
    doc = to_sarif(review, "file:///work/", ruff_rules={})
    assert_valid(validator, doc)
    rules = {r["id"]: r for r in doc["runs"][0]["tool"]["driver"]["rules"]}
    assert rules["F401"]["name"] == "UnusedImport"
    assert rules["F999"]["name"] == "pyflakes"
    assert rules["X100"]["shortDescription"] == {"text": "Rule X100 of ruff."}
    assert rule_for("E999", "ruff", {}).name == "syntax-error"
