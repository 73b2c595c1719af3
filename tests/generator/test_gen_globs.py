"""The generator's globs are gitignore rules: a table of patterns and paths, each row also checked
against ``git check-ignore`` itself (the patterns written to a ``.gitignore`` of a fresh
repository, the paths created as files), then hypothesis-drawn patterns and paths compared with
git the same way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from corec_generator.engine import DEFAULT_EXCLUDES, clear_cache, template_set
from corec_generator.globs import GlobError, Globs, compile_rule, glob_problem, matches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

#: (patterns, path, selected?) as gitignore means them. The file ``path`` is "selected" when
#: git would ignore it: excluded for ``exclude``, kept for ``skip_if_exists``, the condition
#: applies for a ``conditional`` key.
TABLE: list[tuple[tuple[str, ...], str, bool]] = [
    # a name without "/" matches at any depth (unchanged)
    (("*.pyc",), "a/b/c.pyc", True),
    (("README.md",), "README.md", True),
    (("README.md",), "README.md.bak", False),
    (("README.md",), "docs/README.md", True),
    # a "/" in the middle anchors the pattern to the root (unchanged)
    (("tests/*",), "tests/a.py", True),
    (("tests/*",), "pkg/tests/a.py", False),
    # ... and "tests/*" matches the folder tests/sub too, so everything below it (was: not)
    (("tests/*",), "tests/sub/b.py", True),
    # ** spans folders (unchanged)
    (("tests/**",), "tests/a/b.py", True),
    (("**/x",), "x", True),
    (("**/x",), "a/x", True),
    (("**/x",), "a/b/x", True),
    (("**/x",), "x/y", True),  # x is a folder: everything below it
    (("**/x",), "ax", False),
    (("a/**/b",), "a/b", True),
    (("a/**/b",), "a/x/b", True),
    (("a/**/b",), "a/x/y/b", True),
    (("a/**/b",), "a/b/c", True),  # the folder a/b
    (("a/**/b",), "c/a/b", False),
    (("a/**/b",), "a/xb", False),
    # [...] is a character class (was: literal brackets)
    (("[RC]*.md",), "README.md", True),
    (("[RC]*.md",), "CHANGELOG.md", True),
    (("[RC]*.md",), "docs/Rules.md", True),
    (("[RC]*.md",), "LICENSE.md", False),
    (("[RC]*.md",), "[RC]x.md", False),
    # a leading ! takes a path back (was: a file literally named "!README.md")
    (("*.md", "!README.md"), "README.md", False),
    (("*.md", "!README.md"), "docs/README.md", False),
    (("*.md", "!README.md"), "CHANGELOG.md", True),
    (("[RC]*.md", "!README.md"), "README.md", False),
    (("[RC]*.md", "!README.md"), "CHANGELOG.md", True),
    (("!README.md", "*.md"), "README.md", True),  # the last matching line decides
    (("\\!README.md",), "!README.md", True),  # an escaped ! is a literal one
    # a leading / anchors to the root (was: matched nothing)
    (("/docs/*.md",), "docs/a.md", True),
    (("/docs/*.md",), "src/docs/a.md", False),
    (("/docs/*.md",), "docs/sub/a.md", False),
    (("/README.md",), "README.md", True),
    (("/README.md",), "docs/README.md", False),
    # a trailing / matches folders only, at any depth, and everything below (was: nothing)
    (("tests/",), "tests/a.py", True),
    (("tests/",), "tests/sub/b.py", True),
    (("tests/",), "pkg/tests/a.py", True),
    (("tests/",), "tests", False),  # a file named tests
    (("tests/",), "tests2/a.py", False),
    # a name without / matches folders too (was: file names only)
    (("docs",), "docs/a.md", True),
    (("docs",), "src/docs/a.md", True),
    # nothing below a selected folder can be taken back, as in git
    (("tests/", "!tests/keep.py"), "tests/keep.py", True),
    (("docs", "!docs/keep.md"), "docs/keep.md", True),
    # ... but a/** selects what is inside a/, not a/ itself: ! takes a file back
    (("foo/**", "!foo/keep"), "foo/keep", False),
    (("foo/**", "!foo/keep"), "foo/other", True),
    # a negated folder does not undo a pattern that names the file itself
    (("d/x", "!d"), "d/x", True),
    # comments and blank lines mean nothing (was: file names)
    (("#README.md",), "#README.md", False),
    (("", "   "), "a", False),
    # trailing spaces are dropped
    (("README.md  ",), "README.md", True),
]


GIT_OPTIONS = ["git", "-c", "core.ignoreCase=false", "-c", f"core.excludesFile={os.devnull}"]


def git_ignored(patterns: Iterable[str], paths: Iterable[str]) -> set[str]:
    """The ``paths`` git ignores with ``patterns`` as the root ``.gitignore``.

    A fresh repository in a temporary folder, the paths created as files, then
    ``git check-ignore --no-index --stdin``; the user's and system's git configuration are not
    read, and case matters (``core.ignoreCase=false``) as it does for the generator.
    """
    paths = list(paths)
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
    }
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        subprocess.run(["git", "init", "-q", str(root)], check=True, env=env)
        (root / ".gitignore").write_text("\n".join(patterns) + "\n", encoding="utf-8")
        for rel in paths:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("x\n", encoding="utf-8")
        proc = subprocess.run(
            [*GIT_OPTIONS, "check-ignore", "--no-index", "--stdin", "-z"],
            cwd=root,
            input="".join(p + "\0" for p in paths),
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    assert proc.returncode in (0, 1), proc.stderr  # 1: none ignored
    return {p for p in proc.stdout.split("\0") if p}


@pytest.fixture(scope="module")
def need_git() -> None:
    if shutil.which("git") is None:
        if os.environ.get("CI"):
            pytest.fail("git is not installed, and CI is set")
        pytest.skip("git is not installed (set CI to make this a failure)")


@pytest.mark.parametrize(("patterns", "path", "selected"), TABLE)
def test_table_is_gitignore(patterns: tuple[str, ...], path: str, selected: bool) -> None:
    assert matches(path, patterns) is selected


@pytest.mark.usefixtures("need_git")
def test_table_agrees_with_git_check_ignore() -> None:
    """Every row of the table, asked of git itself: one repository per pattern list."""
    groups: dict[tuple[str, ...], list[tuple[str, bool]]] = {}
    for patterns, path, selected in TABLE:
        groups.setdefault(patterns, []).append((path, selected))
    for patterns, rows in groups.items():
        # "x" and "x/y" cannot both be files: such rows go to repositories of their own
        batches: list[list[tuple[str, bool]]] = []
        for row in rows:
            batch = next((b for b in batches if fits(row[0], [p for p, _ in b])), None)
            if batch is None:
                batches.append([row])
            else:
                batch.append(row)
        for batch in batches:
            ignored = git_ignored(patterns, [path for path, _ in batch])
            for path, selected in batch:
                assert (path in ignored) is selected, (patterns, path, "git")
                assert matches(path, patterns) is selected, (patterns, path, "generator")


# --------------------------------------------------------------------------- hypothesis

SEGMENTS = ["a", "b", "x", "docs", "tests", "README.md", "CHANGELOG.md", "Rules.md", "c.py"]
#: The issue's patterns and their neighbours; drawn lists mix them with generated ones.
PATTERNS = [
    "[RC]*.md",
    "!README.md",
    "/docs/*.md",
    "tests/",
    "**/x",
    "a/**/b",
    "*.md",
    "docs",
    "!docs/",
    "tests/*",
    "a/**",
    "!a/b",
    "/x",
    "*.py",
]
PATTERN_SEGMENTS = [
    "a",
    "b",
    "x",
    "docs",
    "tests",
    "*",
    "?",
    "**",
    "*.md",
    "[RC]*",
    "[a-c]",
    "?.py",
]


@st.composite
def generated_pattern(draw: st.DrawFn) -> str:
    body = "/".join(draw(st.lists(st.sampled_from(PATTERN_SEGMENTS), min_size=1, max_size=3)))
    lead = draw(st.sampled_from(["", "/", "!", "!/"]))
    tail = draw(st.sampled_from(["", "", "/"]))
    return lead + body + tail


def fits(path: str, others: list[str]) -> bool:
    """Whether ``path`` can be a file beside the files ``others`` (neither is a folder of the
    other)."""
    return all(
        q != path and not q.startswith(path + "/") and not path.startswith(q + "/") for q in others
    )


def file_set(paths: list[str]) -> list[str]:
    """``paths`` that can all be files at once: none is a folder of another."""
    unique = sorted(set(paths))
    return [p for p in unique if not any(q.startswith(p + "/") for q in unique)]


paths_strategy = st.lists(
    st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4).map("/".join),
    min_size=1,
    max_size=12,
).map(file_set)
patterns_strategy = st.lists(
    st.one_of(st.sampled_from(PATTERNS), generated_pattern()), min_size=1, max_size=5
)


@pytest.mark.usefixtures("need_git")
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns=patterns_strategy, paths=paths_strategy)
def test_generated_patterns_and_paths_agree_with_git(patterns: list[str], paths: list[str]) -> None:
    ignored = git_ignored(patterns, paths)
    decided = Globs(patterns)
    for path in paths:
        assert decided.match(path) is (path in ignored), (patterns, path)


# --------------------------------------------------------------------------- the rest


def test_default_and_bundled_patterns_keep_their_meaning() -> None:
    """The patterns the generator ships with select what they always did."""
    defaults = Globs(DEFAULT_EXCLUDES)
    for path in ("__pycache__/m.cpython-311.pyc", "a/__pycache__/m.pyc", "x.pyc", "a/.DS_Store"):
        assert defaults.match(path), path
    for path in ("node_modules/react/index.js", "web/node_modules/x/y.js", "a/.b.swp"):
        assert defaults.match(path), path
    for path in ("pyproject.toml", "pkg/__init__.py", "src/App.jsx", "pycache.py"):
        assert not defaults.match(path), path
    fastapi = template_set("fastapi_app")
    whens = {entry.src: entry.when for entry in fastapi.entries}
    assert whens["tests/test_app.py.jinja"] == "with_tests"
    assert whens["Dockerfile.jinja"] == "with_docker"
    assert whens["pyproject.toml.jinja"] is None
    react = {entry.src: entry.when for entry in template_set("react_app").entries}
    assert react["src/App.test.jsx.jinja"] == "with_tests"
    assert react["src/App.jsx.jinja"] is None


def test_invalid_patterns_are_refused() -> None:
    for bad in ("!", "\\", "[z-a]", "a\x00b", "a\nb"):
        with pytest.raises(GlobError):
            compile_rule(bad)
        assert glob_problem(bad) is not None
    for bad in ("", "   ", "x" * 257):
        assert glob_problem(bad) is not None
    for fine in ("*.md", "!README.md", "/docs/", "# a comment", "a/**/b"):
        assert glob_problem(fine) is None
    assert compile_rule("# a comment") is None and compile_rule("/") is None


# --------------------------------------------------------------------------- through generation


def files_of(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


async def test_exclude_patterns_are_gitignore_lines(gen_exec: Any, roots: dict[str, Path]) -> None:
    """``exclude_patterns`` from the config: a negation takes README.md back, a trailing ``/``
    drops the whole tests folder, a leading ``/`` names one path from the project's root."""
    envelope = await gen_exec(
        "generate_plugin",
        {"plugin_name": "demo"},
        exclude_patterns=["*.md", "!README.md", "tests/", "/demo/py.typed"],
    )
    assert envelope["status"] == "ok", envelope["error"]
    project = roots["plugins"] / "demo"
    files = files_of(project)
    assert "README.md" in files and "CHANGELOG.md" not in files
    assert not any(f.startswith("tests/") for f in files)
    assert "demo/py.typed" not in files and "demo/processor.py" in files
    assert {f["path"] for f in envelope["result"]["files"]} == files


async def test_conditional_keys_and_skip_if_exists_are_gitignore_lines(
    gen_exec: Any, roots: dict[str, Path], tmp_path: Path
) -> None:
    custom = tmp_path / "custom" / "plugin"
    for rel in ("docs/README.md", "docs/CONTRIBUTING.md", "docs/guide.md", "sub/docs/Rx.md"):
        (custom / rel).parent.mkdir(parents=True, exist_ok=True)
        (custom / rel).write_text(rel + "\n")
    (custom / "extras" / "deep").mkdir(parents=True)
    (custom / "extras" / "a.txt").write_text("a\n")
    (custom / "extras" / "deep" / "b.txt").write_text("b\n")
    (custom / "template.json").write_text(
        json.dumps(
            {
                # class and anchor: docs/README.md and docs/CONTRIBUTING.md, not sub/docs/Rx.md
                "conditional": {"/docs/[RC]*.md": "with_cli", "extras/": "not with_cli"},
                "skip_if_exists": ["*.md", "!docs/guide.md"],
            }
        )
    )
    clear_cache()
    templates = str(tmp_path / "custom")
    without_cli = await gen_exec(
        "generate_plugin",
        {"plugin_name": "nocli", "with_cli": False},
        templates_dir=templates,
    )
    assert without_cli["status"] == "ok", without_cli["error"]
    assert files_of(roots["plugins"] / "nocli") == {
        ".corec-answers.json",
        "docs/guide.md",
        "sub/docs/Rx.md",
        "extras/a.txt",
        "extras/deep/b.txt",
    }
    with_cli = await gen_exec("generate_plugin", {"plugin_name": "cli"}, templates_dir=templates)
    assert with_cli["status"] == "ok", with_cli["error"]
    project = roots["plugins"] / "cli"
    assert files_of(project) == {
        ".corec-answers.json",
        "docs/README.md",
        "docs/CONTRIBUTING.md",
        "docs/guide.md",
        "sub/docs/Rx.md",
    }
    # skip_if_exists: every .md is kept as it is, but !docs/guide.md is overwritten
    for rel in ("docs/README.md", "docs/guide.md"):
        (project / rel).write_text("mine\n")
    again = await gen_exec(
        "generate_plugin", {"plugin_name": "cli", "force": True}, templates_dir=templates
    )
    assert again["status"] == "ok", again["error"]
    actions = {f["path"]: f["action"] for f in again["result"]["files"]}
    assert actions["docs/README.md"] == "skip" and actions["docs/guide.md"] == "overwrite"
    assert (project / "docs" / "README.md").read_text() == "mine\n"
    assert (project / "docs" / "guide.md").read_text() == "docs/guide.md\n"
    clear_cache()


async def test_unusable_globs_are_refused(
    gen_exec: Any, roots: dict[str, Path], tmp_path: Path
) -> None:
    envelope = await gen_exec("generate_plugin", {"plugin_name": "demo", "skip_if_exists": ["!"]})
    assert envelope["status"] == "error"
    assert envelope["error"]["type"] == "invalid_params"
    assert [d["loc"] for d in envelope["error"]["details"]] == ["skip_if_exists"]
    custom = tmp_path / "bad" / "plugin"
    custom.mkdir(parents=True)
    (custom / "x.txt").write_text("x\n")
    (custom / "template.json").write_text(
        json.dumps({"conditional": {"!x.txt": "with_cli"}, "exclude": ["[z-a]"]})
    )
    clear_cache()
    envelope = await gen_exec(
        "generate_plugin", {"plugin_name": "demo"}, templates_dir=str(tmp_path / "bad")
    )
    assert envelope["status"] == "error"
    message = envelope["error"]["message"]
    assert "exclude '[z-a]'" in message and "conditional '!x.txt'" in message
    assert not (roots["plugins"] / "demo").exists()
    clear_cache()
