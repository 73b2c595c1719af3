"""The code blocks of README.md, docs/cli.md and docs/writing-processors.md, run as written.

How a page marks its blocks (HTML comments do not show on the rendered page):

* a ``console`` block: each ``$ `` line is a command, run by bash, in order, in one fresh folder
  (so ``cd`` carries over to the next line); the lines under a command, if any, are what it must
  print (stdout and stderr together, trailing spaces ignored), where ``…`` stands for any text
  within a line and a line of ``…`` alone for any number of lines. Every command must exit 0.
* a file block: the line right before it is the file's path in backticks and a colon,
  `` `corec-greeter/pyproject.toml`: ``. It is written at that path, relative to the folder the
  console blocks of its section run in, before they run.
* ``<!-- not run: REASON -->`` right before a block: the block is not run, for that reason.
* ``<!-- background: COMMAND -->`` right before a console block: its ``$ COMMAND`` line (one
  that runs until stopped, such as the worker) starts first, in the background; once it has
  printed its first line the other lines run, then it gets SIGTERM and must exit 0.
* ``<!-- command-1 -->``, ``<!-- command-2 -->`` (README.md): run by CI itself (.ci/run).

Any other block fails ``test_every_block_is_run_or_marked``, so a new example cannot go
unchecked. Each section (heading) of README.md and docs/cli.md runs in its own folder with the
``corec-kit`` of this test's Python. docs/writing-processors.md is one walk-through: its files go
into one folder and its commands run in a fresh virtualenv that has the kit alone (``slow``).

The commands run with the outer ``COREC_*`` and ``PYTHON*`` variables dropped, ``HOME`` in a
temporary folder and metrics off (``COREC_KERNEL__METRICS_PORT=0``: port 8000 may be taken by a
test running beside this one); otherwise with the defaults the docs assume, so Redis is the
embedded server of each folder's ``.corec/``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCS = ("README.md", "docs/cli.md", "docs/writing-processors.md")
WALKTHROUGH = "docs/writing-processors.md"

#: Sections whose unmarked blocks this file does not run, and why: other tests check them.
#: Each entry must still excuse an unmarked block (test_every_block_is_run_or_marked).
OWNED_ELSEWHERE: dict[tuple[str, str], str] = {}

FENCE = re.compile(r"^```(\S*)\s*$")
HEADING = re.compile(r"^#{1,6} (.+)$")
FILE_MARK = re.compile(r"^`([^`\s]+)`:$")
NOT_RUN = re.compile(r"^<!-- not run: (.*?) -->$")
BACKGROUND = re.compile(r"^<!-- background: (.+?) -->$")
CI_MARK = re.compile(r"^<!-- command-\d+ -->$")
COMMENT = re.compile(r"\s+#\s.*$")  # a trailing shell comment (the docs' commands quote no " #")
ELLIPSIS = "…"
SEPARATOR = "@@corec-docs-run-exit@@"


# --------------------------------------------------------------------------- reading the pages


@dataclass
class Command:
    line: str  # as written after "$ "
    expected: list[str]  # the output lines shown under it ([] = none shown)

    @property
    def bare(self) -> str:
        """The command without its trailing ``# comment``."""
        return COMMENT.sub("", self.line).strip()


@dataclass
class Block:
    doc: str
    lineno: int  # of the opening fence, 1-based
    section: str
    lang: str
    body: str
    marker: str  # the non-blank line right before the fence

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.lineno} ({self.section})"

    @property
    def path(self) -> str | None:
        match = FILE_MARK.match(self.marker)
        return match.group(1) if match else None

    @property
    def background(self) -> str | None:
        match = BACKGROUND.match(self.marker)
        return match.group(1).strip() if match else None

    def kind(self) -> str:
        """``console``, ``file``, ``ci``, ``not run`` or ``unmarked`` (a block the test cannot
        run and nothing excuses)."""
        if CI_MARK.match(self.marker):
            return "ci"
        if NOT_RUN.match(self.marker) or (self.doc, self.section) in OWNED_ELSEWHERE:
            return "not run"
        if self.path is not None:
            return "file"
        if self.lang == "console":
            return "console"
        return "unmarked"

    def commands(self) -> list[Command]:
        commands: list[Command] = []
        for line in self.body.splitlines():
            if line.startswith("$ "):
                commands.append(Command(line[2:], []))
            elif commands:
                commands[-1].expected.append(line)
            elif line.strip():
                raise AssertionError(f"{self.where}: output before the first '$ ' line: {line!r}")
        while commands and commands[-1].expected and not commands[-1].expected[-1].strip():
            commands[-1].expected.pop()
        return commands


def read_blocks(doc: str) -> list[Block]:
    blocks: list[Block] = []
    section = "(top)"
    previous = ""
    lines = (ROOT / doc).read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```")
            body = "".join(f"{text}\n" for text in lines[i + 1 : end])
            blocks.append(Block(doc, i + 1, section, fence.group(1), body, previous))
            previous, i = "", end + 1
            continue
        heading = HEADING.match(line)
        if heading:
            section = heading.group(1).strip()
        if line.strip():
            previous = line.strip()
        i += 1
    return blocks


def sections(doc: str) -> dict[str, list[Block]]:
    """The blocks of each section that are written or run, in page order."""
    out: dict[str, list[Block]] = {}
    for block in read_blocks(doc):
        if block.kind() in {"console", "file"}:
            out.setdefault(block.section, []).append(block)
    return out


# --------------------------------------------------------------------------- comparing outputs


def output_pattern(expected: list[str]) -> re.Pattern[str]:
    """``…`` is any text within a line; a line of ``…`` alone is any number of lines."""
    parts = []
    for line in expected:
        if line.strip() == ELLIPSIS:
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            text = ".*?".join(re.escape(piece) for piece in line.rstrip().split(ELLIPSIS))
            parts.append(text + r"\n")
    return re.compile("".join(parts))


def output_matches(expected: list[str], actual: str) -> bool:
    lines = [line.rstrip() for line in actual.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return output_pattern(expected).fullmatch("".join(f"{line}\n" for line in lines)) is not None


def test_output_pattern_placeholders() -> None:
    assert output_matches(['"id": "exec-…",'], '"id": "exec-1f2e",\n')
    assert output_matches(["{", "…", '  "x": 1', "…", "}"], '{\n  "a": 0,\n  "x": 1\n}\n')
    assert output_matches(["a", "…", "b"], "a\nb\n")
    assert output_matches(["5 passed in …s"], "5 passed in 0.41s   \n\n")
    assert not output_matches(["5 passed in …s"], "4 passed, 1 skipped in 0.41s\n")
    assert not output_matches(["a"], "a\nb\n")
    assert not output_matches(['"id": "exec-…",'], '"id": "exec-1",\n"more": 1\n')
    assert output_matches(["0\tslot 1"], "0\tslot 1\n")


# --------------------------------------------------------------------------- running commands


@dataclass
class Ran:
    command: Command
    returncode: int
    output: str


@dataclass
class Shell:
    """Runs console blocks in ``cwd`` with ``env``; ``ran`` keeps every command's result."""

    cwd: Path
    env: dict[str, str]
    ran: list[Ran] = field(default_factory=list)

    def run_block(self, block: Block, timeout: float = 150) -> None:
        commands = block.commands()
        assert commands, f"{block.where}: a console block with no '$ ' line"
        background = block.background
        foreground = [c for c in commands if c.bare != background]
        if background is not None:
            assert len(foreground) == len(commands) - 1, (
                f"{block.where}: <!-- background: {background} --> names no line of the block"
            )
        with self.in_background(background, block):
            results = self.run_commands(foreground, timeout)
        self.ran += results
        failures = [
            f"$ {ran.command.line}\nexit {ran.returncode}, output:\n{ran.output}"
            + ("\nexpected:\n" + "\n".join(ran.command.expected) if ran.command.expected else "")
            for ran in results
            if ran.returncode != 0
            or (ran.command.expected and not output_matches(ran.command.expected, ran.output))
        ]
        assert not failures, f"{block.where}:\n" + "\n\n".join(failures)

    def run_commands(self, commands: list[Command], timeout: float) -> list[Ran]:
        script = "".join(
            f"{command.line}\nprintf '\\n{SEPARATOR} %s\\n' \"$?\"\n" for command in commands
        )
        with subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-c", script],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        ) as proc:
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
        pieces = re.split(rf"\n?{SEPARATOR} (\d+)\n", out)
        results = [
            Ran(command, int(pieces[2 * i + 1]), pieces[2 * i])
            for i, command in enumerate(commands)
            if 2 * i + 1 < len(pieces)
        ]
        if len(results) < len(commands):  # timed out: the command that hung gets the rest
            results.append(Ran(commands[len(results)], -9, f"{pieces[-1]}\n(timed out)"))
        return results

    @contextlib.contextmanager
    def in_background(self, command: str | None, block: Block) -> Iterator[None]:
        if command is None:
            yield
            return
        log_path = self.cwd.parent / f"{self.cwd.name}.background.log"  # not in the doc's folder
        with (
            open(log_path, "w") as log,
            subprocess.Popen(
                ["bash", "--noprofile", "--norc", "-c", f"exec {command}"],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            ) as proc,
        ):
            try:
                deadline = time.monotonic() + 30
                while not log_path.read_text().strip() and proc.poll() is None:
                    assert time.monotonic() < deadline, f"{block.where}: `{command}` said nothing"
                    time.sleep(0.1)
                assert proc.poll() is None, f"{block.where}: `{command}` exited:\n" + (
                    log_path.read_text()
                )
                yield
                proc.send_signal(signal.SIGTERM)
                returncode = proc.wait(timeout=60)
                assert returncode == 0, (
                    f"{block.where}: `{command}` exited {returncode} on SIGTERM:\n"
                    + log_path.read_text()
                )
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def doc_env(home: Path, bin_dir: Path = BIN) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # PYTEST_ADDOPTS: the outer run's options (`-n 2`) are not the reader's.
        if not key.startswith(("COREC_", "_COREC", "PYTHON", "VIRTUAL_ENV", "PYTEST_"))
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(home)
    env["COREC_KERNEL__METRICS_PORT"] = "0"
    return env


def write_files(blocks: list[Block], folder: Path) -> None:
    for block in blocks:
        if block.kind() == "file":
            assert block.path is not None
            target = folder / block.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.body)


# --------------------------------------------------------------------------- every block


@pytest.mark.parametrize("doc", DOCS)
def test_every_block_is_run_or_marked(doc: str) -> None:
    blocks = read_blocks(doc)
    unmarked = [block.where for block in blocks if block.kind() == "unmarked"]
    assert not unmarked, (
        "blocks the test cannot run and nothing marks (a console block, a `path`: line for a "
        "file, or <!-- not run: REASON -->; see tests/kernel/test_docs_run.py): "
        + ", ".join(unmarked)
    )
    for block in blocks:
        reason = NOT_RUN.match(block.marker)
        assert reason is None or reason.group(1).strip(), f"{block.where}: not run, no reason"
        if block.path is not None:
            path = Path(block.path)
            assert not path.is_absolute() and ".." not in path.parts, block.where
        if block.kind() == "console":
            assert block.commands(), f"{block.where}: no '$ ' line"
        if block.background is not None:
            assert block.kind() == "console", block.where
            bare = [command.bare for command in block.commands()]
            assert block.background in bare, f"{block.where}: no '$ {block.background}' line"
    for (owned_doc, section), _reason in OWNED_ELSEWHERE.items():
        if owned_doc == doc:
            assert any(b.section == section and not NOT_RUN.match(b.marker) for b in blocks), (
                f"OWNED_ELSEWHERE[{doc!r}, {section!r}] excuses no block any more: remove it"
            )
    run = sections(doc)
    if doc != WALKTHROUGH:  # a file block is used by its section's commands
        for name, section_blocks in run.items():
            if not any(b.kind() == "console" for b in section_blocks):
                pytest.fail(f"{doc} ({name}): file blocks with no console block to use them")
    assert any(b.kind() == "console" for blocks_ in run.values() for b in blocks_)


def section_cases() -> list[tuple[str, str]]:
    return [(doc, name) for doc in DOCS if doc != WALKTHROUGH for name in sections(doc)]


@pytest.mark.parametrize(
    ("doc", "section"),
    section_cases(),
    ids=[f"{Path(doc).name}-{section.strip('`')}" for doc, section in section_cases()],
)
def test_section_runs_as_written(
    doc: str, section: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("doc")  # short: the embedded server's socket lies under it
    home = tmp_path_factory.mktemp("home")
    blocks = sections(doc)[section]
    write_files(blocks, folder)
    shell = Shell(folder, doc_env(home))
    for block in blocks:
        if block.kind() == "console":
            shell.run_block(block)


def test_readme_config_is_a_valid_config_file(tmp_path: Path) -> None:
    """The README's JSON config is not run (it names a deployment's hosts), but every key of it
    is valid: ``--strict`` makes unknown keys fatal, and ``exec`` needs no server."""
    configs = [b for b in read_blocks("README.md") if b.lang == "json"]
    assert configs
    for block in configs:
        (tmp_path / "corec.json").write_text(block.body)
        proc = subprocess.run(
            [str(BIN / "corec-kit"), "--strict", "exec", "ping"],
            cwd=tmp_path,
            env=doc_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"{block.where}: {proc.stderr}"


# --------------------------------------------------------------------------- writing-processors.md


def layout(block: Block) -> tuple[set[str], set[str]]:
    """(every file, the empty ones) of a tree block: two spaces per level, folders end in /."""
    files, empty, stack = set(), set(), []
    for line in block.body.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name, _, note = line.strip().partition(" ")
        del stack[depth:]
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
            continue
        path = "/".join([*stack, name])
        files.add(path)
        if note.strip().startswith("(empty"):
            empty.add(path)
    return files, empty


def walkthrough_files() -> tuple[list[Block], set[str]]:
    """The page's file blocks and the empty files its tree names; checks the tree names exactly
    those."""
    blocks = read_blocks(WALKTHROUGH)
    trees = [b for b in blocks if NOT_RUN.match(b.marker) and "layout" in b.marker]
    assert len(trees) == 1, "docs/writing-processors.md: one layout block"
    files, empty = layout(trees[0])
    written = [b for b in blocks if b.kind() == "file"]
    assert {b.path for b in written} | empty == files, "the layout and the file blocks disagree"
    assert not {b.path for b in written} & empty
    return written, empty


def test_walkthrough_layout_matches_its_files() -> None:
    written, empty = walkthrough_files()
    assert {b.path for b in written} >= {
        "corec-greeter/pyproject.toml",
        "corec-greeter/corec_greeter/processor.py",
        "corec-greeter/tests/test_greeter.py",
    }
    assert empty == {"corec-greeter/corec_greeter/py.typed"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_writing_processors_page_works(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The page's files copied into a new folder, installed with the page's own commands into a
    fresh virtualenv that has the kit alone (built from this checkout, not editable): every
    command the page shows succeeds and prints what the page shows, ``list-processors`` lists
    the processor, and the page's tests all run and pass (none skipped)."""
    folder = tmp_path_factory.mktemp("walk")
    venv = tmp_path_factory.mktemp("venv") / "env"
    written, empty = walkthrough_files()
    write_files(written, folder)
    for path in empty:
        (folder / path).touch()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]

    env = doc_env(Path.home(), venv / "bin")  # the real home: pip's cache
    env["VIRTUAL_ENV"] = str(venv)
    shell = Shell(folder, env)
    consoles = [b for b in read_blocks(WALKTHROUGH) if b.kind() == "console"]
    assert consoles
    for block in consoles:
        shell.run_block(block, timeout=400)

    ran = {r.command.bare: r for r in shell.ran}
    assert any(c.startswith("pip install") for c in ran), "the page installs nothing"
    listed = ran["corec-kit list-processors"].output.splitlines()
    assert [line.split()[:4] for line in listed] == [
        ["greeter", "loaded", "corec-greeter", "0.1.0"]
    ]
    tests = [r for c, r in ran.items() if "pytest" in c]
    assert len(tests) == 1, "the page runs its tests once"
    summary = tests[0].output.strip().splitlines()[-1]
    test_file = next(b for b in written if b.path == "corec-greeter/tests/test_greeter.py")
    count = len(re.findall(r"^(?:async )?def test_", test_file.body, flags=re.MULTILINE))
    assert re.fullmatch(rf"{count} passed in [\d.]+s", summary), summary
    assert (
        str(venv)
        in subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import corec_plugin_kit; print(corec_plugin_kit.__file__)",
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=folder,
        ).stdout
    )
