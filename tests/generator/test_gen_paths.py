"""Containment: hostile names and paths, symlinks (also swapped in mid-run), exclusive creation."""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any

import pytest
from corec_generator.engine import Job, generate, template_set
from corec_generator.paths import (
    OutputEscapeError,
    OutputExistsError,
    Sandbox,
    check_name,
    check_relative,
    check_template_path,
)
from hypothesis import given, settings
from hypothesis import strategies as st

# Names a user (or an attacker on the stream) might send; each must be refused.
HOSTILE_NAMES = [
    "",
    ".",
    "..",
    "../x",
    "a/../b",
    "../../etc/passwd",
    "/etc",
    "/",
    "//server/share",
    "\\\\server\\share",
    "\\\\?\\C:\\x",
    "C:",
    "C:\\Windows",
    "c:foo",
    "a/b",
    "a\\b",
    "a\x00b",
    "\x00",
    "plug\nin",
    "tab\tname",
    " lead",
    "trail ",
    "dot.",
    ".hidden",
    "-dash",
    "_under",
    "9lives",
    "CON",
    "con",
    "Nul",
    "aux",
    "prn",
    "COM1",
    "lpt9",
    "nul.txt",
    "x" * 65,
    "ünïcode",
    "\uff41bc",  # fullwidth a
    "caf\u00e9",
    "a b",
    "a;rm -rf",
    "$(whoami)",
    "`id`",
    "a*b",
    "a?b",
    "a:b",
    "a|b",
    "a<b>",
    'a"b',
    "a'b",
    "~",
    "~root",
    "import",
    "class",
    "match",
    "os",
    "json",
    "sys",
    "kernel",
    "generator",
    "corec_plugin_kit",
    "tests",
    "a\u202eb",  # right-to-left override
    "a\u200bb",  # zero-width space
]

HOSTILE_OUTPUTS = [
    "..",
    "../",
    "../x",
    "a/../../x",
    "a/..",
    "./../x",
    "/",
    "/tmp",
    "/etc/cron.d",
    "//server/share",
    "\\\\server\\share",
    "\\\\?\\UNC\\server\\share",
    "\\tmp",
    "a\\..\\b",
    "C:",
    "C:\\",
    "C:/Windows",
    "c:relative",
    "Z:x",
    "a\x00b",
    "a/\x00",
    "a\nb",
    "a\rb",
    "\x1b[31m",
    "~",
    "~/x",
    "~root/x",
    "a/CON",
    "nul",
    "x/aux.txt",
    "COM1/x",
    "a/ b",
    "a/b ",
    "a/b.",
    "a/$HOME",
    "a/*",
    "a/?",
    "a/b:c",
    "a/<x>",
    "a/|x",
    "\u2025",  # two-dot leader
    "\uff0e\uff0e/x",  # fullwidth dots
    "a/\u202e",
    "x/" * 600,
]

# Bad segments placed at every depth: a check that only looks at the first segment, or only at
# the last, fails here.
BAD_SEGMENTS = [
    "..",
    "~",
    "~x",
    "CON",
    "nul.txt",
    "Lpt1",
    "a\x00",
    "a b",
    "x:y",
    "*",
    "\u202e",
    "C:",
]
COMPOSED_OUTPUTS = [
    f"{pre}{bad}{post}"
    for bad in BAD_SEGMENTS
    for pre in ("", "ok/", "ok/deeper/")
    for post in ("", "/tail", "/tail/more")
]


def test_enough_hostile_inputs() -> None:
    assert len(HOSTILE_NAMES) + len(HOSTILE_OUTPUTS) + len(COMPOSED_OUTPUTS) >= 200


@pytest.mark.parametrize("output", COMPOSED_OUTPUTS)
def test_hostile_segments_at_any_depth_are_refused(output: str) -> None:
    segments, problems = check_relative(output)
    assert problems and segments == [], output


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused(name: str) -> None:
    problems = check_name(name, "plugin_name")
    assert problems, f"{name!r} was accepted"
    assert problems[0]["loc"] == "plugin_name"


@pytest.mark.parametrize("output", HOSTILE_OUTPUTS)
def test_hostile_outputs_are_refused(output: str) -> None:
    segments, problems = check_relative(output)
    assert problems, f"{output!r} was accepted as {segments}"
    assert segments == []


@pytest.mark.parametrize("name", ["my_plugin", "MyPlugin", "a", "weather-2", "x" * 64])
def test_good_names_pass(name: str) -> None:
    assert check_name(name, "plugin_name") == []


@pytest.mark.parametrize(
    ("output", "segments"),
    [(None, []), ("", []), (".", []), ("a", ["a"]), ("a/b/", ["a", "b"]), ("./a//b", ["a", "b"])],
)
def test_good_outputs_pass(output: str | None, segments: list[str]) -> None:
    assert check_relative(output) == (segments, [])


# Any string at all: whatever check_relative accepts must be plain segments that stay below
# the root once joined (the property the writer relies on).
@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=string.printable + "\x00\u202e\uff0e\u2025", max_size=40))
def test_accepted_outputs_stay_below_root(value: str) -> None:
    segments, problems = check_relative(value)
    if problems:
        assert segments == []
        return
    root = Path("/srv/root")
    joined = Path(os.path.normpath(root.joinpath(*segments)))
    assert joined == root or root in joined.parents
    for seg in segments:
        assert seg not in ("", ".", "..")
        assert "/" not in seg and "\\" not in seg and ":" not in seg


_SEG = st.sampled_from(["..", ".", "", "a", "/", "\\", "C:", "~", "\x00", "CON", "b c", "x.."])


@settings(max_examples=300, deadline=None)
@given(st.lists(_SEG, min_size=1, max_size=6).map("/".join))
def test_composed_traversals(value: str) -> None:
    segments, problems = check_relative(value)
    if ".." in value.split("/") or "\x00" in value or "\\" in value or value.startswith("/"):
        assert problems, value
    assert ".." not in segments


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=70))
def test_accepted_names_are_plain_identifiers(value: str) -> None:
    if check_name(value, "n"):
        return
    assert value.isascii() and value[0].isalpha()
    assert not set(value) - set(string.ascii_letters + string.digits + "_-")


def test_template_paths_are_checked() -> None:
    assert check_template_path(("a", "..", "b")) is not None
    assert check_template_path(("a/b",)) is not None
    assert check_template_path(("nul",)) is not None
    assert check_template_path(("a", "b.py")) is None


# --------------------------------------------------------------------------- through the action


def refused_as(params: dict[str, Any]) -> str:
    """NUL characters are refused by the kernel for every command, before the generator."""
    nul = any("\x00" in str(value) for value in params.values())
    return "invalid_command" if nul else "invalid_params"


async def test_hostile_params_through_exec_write_nothing(
    gen_exec: Any, roots: dict[str, Path], snapshot: Any
) -> None:
    """Every hostile name and output, sent as a command, is refused with nothing written."""
    before = snapshot(roots["plugins"].parent.parent)
    cases = [{"plugin_name": name} for name in HOSTILE_NAMES]
    cases += [{"plugin_name": "fine", "output": out} for out in HOSTILE_OUTPUTS + COMPOSED_OUTPUTS]
    assert len(cases) >= 200
    for params in cases:
        envelope = await gen_exec("generate_plugin", params)
        assert envelope["status"] == "error", params
        assert envelope["error"]["type"] == refused_as(params), (params, envelope["error"])
    sites = [{"template": "fastapi", "project_name": n} for n in HOSTILE_NAMES[:20]]
    for params in sites:
        envelope = await gen_exec("generate_website", params)
        assert envelope["error"]["type"] == refused_as(params), params
    assert snapshot(roots["plugins"].parent.parent) == before


async def test_all_problems_reported_at_once(gen_exec: Any, roots: dict[str, Path]) -> None:
    envelope = await gen_exec(
        "generate_website",
        {
            "template": "react",
            "project_name": "../x",
            "output": "/abs",
            "with_cors": True,
            "skip_if_exists": [""],
            "description": "two\nlines",
        },
    )
    assert envelope["error"]["type"] == "invalid_params"
    locs = sorted(d["loc"] for d in envelope["error"]["details"])
    assert locs == ["description", "output", "project_name", "skip_if_exists", "with_cors"]
    envelope = await gen_exec(
        "generate_website", {"template": "react", "project_name": "CON", "with_cors": True}
    )
    assert sorted(d["loc"] for d in envelope["error"]["details"]) == ["project_name", "with_cors"]
    assert list(roots["websites"].iterdir()) == []


async def test_symlink_below_root_is_not_followed(
    gen_exec: Any, roots: dict[str, Path], snapshot: Any
) -> None:
    (roots["plugins"] / "link").symlink_to(roots["outside"], target_is_directory=True)
    envelope = await gen_exec("generate_plugin", {"plugin_name": "p", "output": "link"})
    assert envelope["error"]["type"] == "handler_error"
    assert "symlink" in envelope["error"]["message"]
    assert snapshot(roots["outside"]) == {}
    # a symlink as the project folder itself, and deeper
    (roots["plugins"] / "deep" / "er").mkdir(parents=True)
    (roots["plugins"] / "deep" / "er" / "p").symlink_to(roots["outside"])
    envelope = await gen_exec("generate_plugin", {"plugin_name": "p", "output": "deep/er"})
    assert envelope["status"] == "error"
    assert snapshot(roots["outside"]) == {}


async def test_symlinked_file_is_refused_then_replaced_not_followed(
    gen_exec: Any, roots: dict[str, Path]
) -> None:
    victim = roots["outside"] / "victim.txt"
    victim.write_text("keep me")
    project = roots["plugins"] / "p"
    project.mkdir()
    (project / "README.md").symlink_to(victim)
    envelope = await gen_exec("generate_plugin", {"plugin_name": "p"})
    assert envelope["status"] == "error"
    assert any(d["loc"] == "README.md" for d in envelope["error"]["details"])
    assert not (project / "pyproject.toml").exists()  # refused runs write nothing
    envelope = await gen_exec("generate_plugin", {"plugin_name": "p", "force": True})
    assert envelope["status"] == "ok", envelope["error"]
    assert victim.read_text() == "keep me"
    assert not (project / "README.md").is_symlink()
    assert "corec-p" in (project / "README.md").read_text()


def test_symlink_swapped_in_during_a_run(roots: dict[str, Path], snapshot: Any) -> None:
    """After the first file is written, the package folder is replaced by a symlink to a folder
    outside the root: the next write below it must fail, and nothing may land outside."""
    tset = template_set("plugin")
    from corec_generator.processor import GeneratePluginParams, GeneratorConfig, plugin_job

    job: Job = plugin_job(
        GeneratePluginParams(plugin_name="swap"), GeneratorConfig(), roots["plugins"], []
    )
    assert job.tset is tset
    project = roots["plugins"] / "swap"
    swapped: list[str] = []

    def swap(item: Any) -> None:
        if swapped:
            return
        # the first file is at the project root; swap the whole project folder for a link
        os.rename(project, roots["plugins"] / "moved")
        project.symlink_to(roots["outside"], target_is_directory=True)
        swapped.append(item.path)

    with pytest.raises(OutputEscapeError, match="symlink"):
        generate(job, on_file=swap)
    assert swapped
    assert snapshot(roots["outside"]) == {}
    # what was written before the swap is where it belongs
    assert (roots["plugins"] / "moved" / swapped[0]).is_file()


def test_sandbox_creates_exclusively(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "root") as box:
        box.write(("a", "b.txt"), b"one")
        with pytest.raises(OutputExistsError):
            box.write(("a", "b.txt"), b"two")
        assert (tmp_path / "root" / "a" / "b.txt").read_bytes() == b"one"
        box.write(("a", "b.txt"), b"two", overwrite=True)
        assert (tmp_path / "root" / "a" / "b.txt").read_bytes() == b"two"
        assert sorted(os.listdir(tmp_path / "root" / "a")) == ["b.txt"]  # no temp file left
        (tmp_path / "root" / "dir").mkdir()
        with pytest.raises(OutputEscapeError):
            box.write(("dir",), b"x", overwrite=True)
        (tmp_path / "root" / "file").write_text("f")
        with pytest.raises(OutputEscapeError):
            box.write(("file", "x"), b"x")  # a file where a folder should be
        assert box.kind(("a",)) == "dir"
        assert box.kind(("a", "b.txt")) == "file"
        assert box.kind(("missing", "x")) is None


def test_sandbox_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputEscapeError):
        Sandbox(tmp_path / "f", create=False)
