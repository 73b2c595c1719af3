"""Meta-tests: the docs say what the code does (datasette style).

* every hook has a ``## corec_<name>`` heading in docs/hooks.md showing its exact signature, and
  at least one test implements it;
* docs/configuration.md lists every kernel key with its default (the generated table);
* docs/cli.md matches each built-in command's ``--help`` (summary line and options), and so do
  the processor commands it documents in sections of their own;
* the processor package of docs/writing-processors.md works and its tests pass.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from corec_plugin_kit import hookspecs
from corec_plugin_kit.cli import cli
from corec_plugin_kit.config import kernel_keys_table

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"


def spec_signature(name: str) -> str:
    """``def name(arg: Type) -> Ret`` as written in hookspecs.py (annotations are strings)."""
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"def {name}({params}) -> {sig.return_annotation}"


def doc_sections(text: str, level: str) -> dict[str, str]:
    """``{heading: body}`` for the headings of one level (``##`` or ``###``)."""
    parts = re.split(rf"^{level} (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


HOOKS_MD = (DOCS / "hooks.md").read_text()


def test_hook_names_match_the_hookspecs() -> None:
    defined = {name for name in dir(hookspecs) if name.startswith("corec_")}
    assert defined == set(hookspecs.HOOK_NAMES)


@pytest.mark.parametrize("hook", hookspecs.HOOK_NAMES)
def test_hook_documented_with_exact_signature(hook: str) -> None:
    sections = doc_sections(HOOKS_MD, "##")
    assert hook in sections, f"docs/hooks.md has no '## {hook}' heading"
    body = sections[hook]
    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)
    assert blocks, f"'## {hook}' has no python code block"
    assert blocks[0].strip() == spec_signature(hook)
    assert "New in version 0.1" in body
    assert "**When**" in body
    assert "**Return**" in body


@pytest.mark.parametrize("hook", hookspecs.HOOK_NAMES)
def test_hook_exercised_by_a_test(hook: str) -> None:
    implemented = re.compile(rf"def {hook}\(")
    users = [
        path
        for path in TESTS.rglob("*.py")
        if path.name != "test_docs.py" and implemented.search(path.read_text())
    ]
    assert users, f"no test implements {hook}"


def test_configuration_lists_every_kernel_key() -> None:
    text = (DOCS / "configuration.md").read_text()
    assert kernel_keys_table() in text, (
        "docs/configuration.md's table is stale; regenerate it with "
        "corec_plugin_kit.config.kernel_keys_table()"
    )
    from corec_plugin_kit.config import KernelConfig

    for key in KernelConfig.model_fields:
        assert f"| `{key}" in text


CLI_MD = (DOCS / "cli.md").read_text()


def option_names(command: click.Command) -> set[str]:
    """Each option as docs/cli.md writes it: ``--json``, ``-p``/``--param`` (hidden ones,
    internal to the kit such as the supervisor's ``--metrics-snapshot``, are not documented)."""
    names = set()
    for param in command.params:
        if isinstance(param, click.Option) and "--help" not in param.opts and not param.hidden:
            names.add("/".join(f"`{opt}`" for opt in sorted(param.opts, key=len)))
    return names


def documented_options(body: str) -> set[str]:
    match = re.search(r"^Options: (.+)$", body, flags=re.MULTILINE)
    assert match, "section has no 'Options:' line"
    if match.group(1).strip() == "none":
        return set()
    return {part.strip() for part in match.group(1).split(", ")}


def summary(body: str) -> str:
    match = re.search(r"^> (.+)$", body, flags=re.MULTILINE)
    assert match, "section has no '> summary' line"
    return match.group(1).strip()


def first_help_paragraph(command: click.Command) -> str:
    return " ".join((command.help or "").strip().split("\n\n")[0].split())


def builtin_commands() -> dict[str, click.Command]:
    ctx = click.Context(cli)
    commands = {}
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        if type(command).__name__ != "ProcessorGroup":
            commands[name] = command
    return commands


def test_every_builtin_command_is_documented() -> None:
    sections = doc_sections(CLI_MD, "###")
    documented = {
        heading.strip("`").split()[-1] for heading in sections if heading != "`corec-kit`"
    }
    assert set(builtin_commands()) == documented
    assert {"list-processors", "actions", "describe", "exec", "check", "completion"} <= documented


@pytest.mark.parametrize(
    "name",
    [
        "corec-kit",
        "list-processors",
        "actions",
        "describe",
        "exec",
        "check",
        "completion",
        "run",
        "send",
        "streams",
        "asyncapi",
        "history",
        "corec",
    ],
)
def test_help_text_matches_cli_md(name: str, corec_cli: Any) -> None:
    sections = doc_sections(CLI_MD, "###")
    body = sections[f"`corec-kit {name}`" if name != "corec-kit" else "`corec-kit`"]
    command = cli if name == "corec-kit" else builtin_commands()[name]
    assert summary(body) == first_help_paragraph(command)
    assert documented_options(body) == option_names(command)
    # And the rendered --help (what a user sees) shows that summary and those options.
    result = corec_cli(*([] if name == "corec-kit" else [name]), "--help")
    assert result.exit_code == 0
    rendered = " ".join(result.output.split())
    assert summary(body) in rendered
    for option in documented_options(body):
        for opt in option.replace("`", "").split("/"):
            assert opt in rendered


def processor_command(path: str) -> click.Command:
    """``manager dlq delete`` -> that command, resolved as ``corec-kit`` resolves it (the
    processor's group fills itself from the installed processors)."""
    ctx = click.Context(cli)
    command: click.Command | None = cli
    for name in path.split():
        assert isinstance(command, click.Group), path
        command = command.get_command(ctx, name)
    assert command is not None, path
    return command


@pytest.mark.parametrize("path", ["manager dlq replay", "manager dlq delete", "manager console"])
def test_processor_command_help_matches_cli_md(path: str, corec_cli: Any) -> None:
    """The processor commands documented in a ``####`` section of "Processor commands"."""
    body = doc_sections(CLI_MD, "####")[f"`corec-kit {path}`"]
    command = processor_command(path)
    assert summary(body) == first_help_paragraph(command)
    assert documented_options(body) == option_names(command)
    result = corec_cli(*path.split(), "--help")
    assert result.exit_code == 0, result.output
    rendered = " ".join(result.output.split())
    assert summary(body) in rendered
    for option in documented_options(body):
        assert option.strip("`") in rendered


def test_exit_codes_in_help_match_cli_md() -> None:
    table = dict(re.findall(r"^\| (\d+) \| ([^|]+?) [|(]", CLI_MD, flags=re.MULTILINE))
    from corec_plugin_kit import errors

    constants = {
        value
        for key, value in vars(errors).items()
        if key.startswith("EXIT_") and isinstance(value, int)
    }
    # 0 (ok) is the normal exit and has no constant; every other code is one EXIT_ constant.
    assert {int(code) for code in table} == constants | {0}
    help_text = " ".join((cli.help or "").split())
    for code in table:
        assert re.search(rf"\b{code} \w", help_text), (
            f"exit code {code} missing from corec-kit --help"
        )


# --------------------------------------------------------------------------- writing-processors.md


def code_block_after(text: str, marker: str, lang: str) -> str:
    start = text.index(marker)
    match = re.compile(rf"```{lang}\n(.*?)```", re.DOTALL).search(text, start)
    assert match
    return match.group(1)


@pytest.mark.timeout(120)
def test_writing_processors_example_works(tmp_path: Path) -> None:
    """Build the page's package (as an installed distribution on a path) and run its tests with
    the page's own pytest configuration (tests/kernel/test_docs_run.py installs it with pip)."""
    text = (DOCS / "writing-processors.md").read_text()
    site = tmp_path / "site"
    package = site / "corec_greeter"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        code_block_after(text, "`corec-greeter/corec_greeter/__init__.py`:", "python")
    )
    (package / "processor.py").write_text(
        code_block_after(text, "`corec-greeter/corec_greeter/processor.py`:", "python")
    )
    pyproject = code_block_after(text, "`corec-greeter/pyproject.toml`:", "toml")
    entry = re.search(r'^greeter = "(.+)"$', pyproject, flags=re.MULTILINE)
    assert entry and entry.group(1) == "corec_greeter.processor"
    # What pip would write for the entry point (pip itself is exercised by test_fresh_venv.py).
    info = site / "corec_greeter-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: corec-greeter\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[corec.processors]\ngreeter = {entry.group(1)}\n")
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_greeter.py").write_text(
        code_block_after(text, "`corec-greeter/tests/test_greeter.py`:", "python")
    )
    (tmp_path / "pyproject.toml").write_text(pyproject)  # its [tool.pytest.ini_options]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COREC_")}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", "tests"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "5 passed" in proc.stdout
    # The page's CLI group and blocking handler work through the real console script.
    kit = Path(sys.executable).parent / "corec-kit"
    env["COREC_KERNEL__STATE_DIR"] = str(tmp_path / ".corec")
    hello = subprocess.run(
        [str(kit), "greeter", "hello", "ada"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert hello.returncode == 0, hello.stderr
    assert '"greeting": "hello ada"' in hello.stdout
    (tmp_path / "f.txt").write_text("x")
    digest = subprocess.run(
        [str(kit), "exec", "file_digest", "-p", "path=f.txt"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert digest.returncode == 0, digest.stderr
    assert "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881" in digest.stdout


@pytest.mark.parametrize("name", ["run", "send", "history"])
def test_lazy_command_summaries_match_their_help(name: str) -> None:
    """`corec-kit --help` shows these without importing the commands' modules."""
    from corec_plugin_kit.cli import LAZY_COMMANDS

    command = builtin_commands()[name]
    assert LAZY_COMMANDS[name][2] == first_help_paragraph(command)
