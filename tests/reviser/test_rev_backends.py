"""Both back-ends on sources with known problems; where they differ is pinned down here."""

from __future__ import annotations

from pathlib import Path

import pytest
from corec_reviser.backends import make_backend
from corec_reviser.config import ReviserConfig

BACKENDS = ["ruff", "black+pyflakes"]
BAD = "import os\nimport sys\n\ndef f( x ):\n    return undefined_name+x\n"
CLEAN = "def f(x):\n    return x\n"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> object:
    return make_backend(ReviserConfig(), request.param)


def test_known_findings_and_formatting(backend: object) -> None:
    review = backend.review(BAD, "bad.py")  # type: ignore[attr-defined]
    codes = [(f.code, f.line) for f in review.findings]
    assert codes == [("F401", 1), ("F401", 2), ("F821", 5)]
    undefined = review.findings[-1]
    assert undefined.severity == "error" and "undefined_name" in undefined.message
    assert undefined.column == 12  # 1-based, the same in both back-ends
    assert review.findings[0].severity == "warning"
    assert not review.formatted
    assert "-def f( x ):" in review.diff and "+def f(x):" in review.diff
    assert review.diff.startswith("--- a/bad.py\n+++ b/bad.py\n")
    assert review.fixed is None


def test_fix_returns_the_formatted_text_and_clean_code_is_clean(backend: object) -> None:
    review = backend.review(BAD, "bad.py", fix=True)  # type: ignore[attr-defined]
    assert review.fixed is not None and "def f(x):\n    return undefined_name + x\n" in review.fixed
    clean = backend.review(CLEAN, "ok.py")  # type: ignore[attr-defined]
    assert clean.formatted and clean.findings == [] and clean.diff == ""


def test_syntax_errors_are_findings_not_crashes(backend: object) -> None:
    review = backend.review("def (:\n", "broken.py")  # type: ignore[attr-defined]
    assert review.findings and review.findings[0].code == "E999"
    assert review.findings[0].severity == "error"
    assert review.formatted  # nothing to say about the format of what does not parse


def test_where_the_back_ends_differ_noqa() -> None:
    source = "import os  # noqa: F401\n"
    ruff = make_backend(ReviserConfig(), "ruff").review(source, "n.py")
    classic = make_backend(ReviserConfig(), "black+pyflakes").review(source, "n.py")
    assert ruff.findings == []  # ruff honours noqa
    assert [f.code for f in classic.findings] == ["F401"]  # pyflakes itself does not


def test_where_the_back_ends_differ_message_wording() -> None:
    source = "x = undefined\n"
    ruff = make_backend(ReviserConfig(), "ruff").review(source, "w.py").findings[0]
    classic = make_backend(ReviserConfig(), "black+pyflakes").review(source, "w.py").findings[0]
    assert ruff.code == classic.code == "F821"
    assert ruff.message == "Undefined name `undefined`"
    assert classic.message == "undefined name 'undefined'"


def test_line_length_is_honoured(backend: object) -> None:
    args = ", ".join(f"argument_{i}" for i in range(8))
    long_call = f"result = some_function({args})\n"  # 104 characters: between 88 and 120
    wide = make_backend(ReviserConfig(line_length=120), backend.name)  # type: ignore[attr-defined]
    assert wide.review(long_call, "l.py").formatted
    assert not backend.review(long_call, "l.py").formatted  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", BACKENDS)
def test_many_files_agree_with_one_by_one(name: str, tmp_path: Path) -> None:
    backend = make_backend(ReviserConfig(jobs=2), name)
    files = []
    for i in range(6):
        path = tmp_path / f"m{i}.py"
        path.write_text(BAD if i % 2 else CLEAN)
        files.append(path)
    (tmp_path / "latin.py").write_bytes(b"x = '\xe9'\n")
    files.append(tmp_path / "latin.py")
    names = [p.name for p in files]
    batch = backend.review_files(files, names)
    for review, path in zip(batch[:6], files[:6], strict=True):
        single = backend.review(path.read_text(), path.name)
        assert [(f.code, f.line, f.column) for f in review.findings] == [
            (f.code, f.line, f.column) for f in single.findings
        ]
        assert review.formatted == single.formatted
        assert review.diff == single.diff
    assert batch[6].error == "not UTF-8 text"


def _codes(name: str, source: str) -> list[tuple[str, int, int]]:
    review = make_backend(ReviserConfig(), name).review(source, "d.py")
    return [(f.code, f.line, f.column) for f in review.findings]


def test_where_the_back_ends_differ_file_level_noqa() -> None:
    # ruff treats a file-level "flake8: noqa" or "ruff: noqa" header as "skip this file";
    # pyflakes reads no comments at all. The headers are built by concatenation so that ruff,
    # linting this test file, does not take them as directives for the test file itself.
    for tool in ("flake8", "ruff"):
        header = "# " + tool + ": noqa\n"
        source = header + "import os\n"
        assert _codes("ruff", source) == []
        assert _codes("black+pyflakes", source) == [("F401", 2, 1)]


def test_where_the_back_ends_differ_pyflakes_only_duplicate_key() -> None:
    # pyflakes reports every occurrence of a repeated dict key; ruff only the repeats after the
    # first, so the first `'a'` is a pyflakes-only finding.
    source = "d = {'a': 1, 'a': 2}\n"
    assert _codes("black+pyflakes", source) == [("F601", 1, 6), ("F601", 1, 14)]
    assert _codes("ruff", source) == [("F601", 1, 14)]


def test_where_the_back_ends_differ_syntax_errors() -> None:
    # ruff's parser recovers and reports every error; pyflakes stops at the first (compile()).
    source = "def (:\nclass :\n"
    classic = _codes("black+pyflakes", source)
    ruff = _codes("ruff", source)
    assert classic == [("E999", 1, 5)]
    assert len(ruff) > 1 and {c for c, _, _ in ruff} == {"E999"}
    assert ruff[0] == ("E999", 1, 5) and any(line == 2 for _, line, _ in ruff)


def test_where_the_back_ends_differ_columns() -> None:
    # ruff points at the bound name, pyflakes at the start of the statement or handler.
    source = "try:\n    pass\nexcept Exception as e:\n    pass\n"
    assert _codes("ruff", source) == [("F841", 3, 21)]
    assert _codes("black+pyflakes", source) == [("F841", 3, 1)]


@pytest.mark.parametrize("isolated", [True, False])
def test_ruff_ignores_the_reviewed_trees_config_unless_asked(
    tmp_path: Path, isolated: bool
) -> None:
    # A project config asking for single quotes must not change the verdict while ruff_isolated
    # is on (the default): the same file gets the same verdict wherever it lives. (The rule
    # selection and line length are always the reviser's: they are passed on the command line.)
    (tmp_path / "pyproject.toml").write_text("[tool.ruff.format]\nquote-style = 'single'\n")
    path = tmp_path / "m.py"
    path.write_text("x = 'a'\n")
    backend = make_backend(ReviserConfig(ruff_isolated=isolated), "ruff")
    many = backend.review_files([path], ["m.py"])[0]
    one = backend.review(path.read_text(), str(path))
    assert many.formatted is one.formatted is (not isolated)
    assert ('+x = "a"' in many.diff) is isolated
