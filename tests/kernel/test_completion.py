"""Shell completion of ``corec-kit`` (docs/cli.md, "corec-kit completion").

Two levels, both real processes: click's completion protocol (what the scripts of
``corec-kit completion bash|zsh|fish`` run on every TAB: ``_COREC_KIT_COMPLETE=<shell>_complete``
with ``COMP_WORDS``/``COMP_CWORD``) in a subprocess of this Python, for the three shells; and a
real interactive bash in tmux that evaluates the bash script and gets TAB pressed (zsh and fish
are covered by the protocol only).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from shared_helpers import wait_until

from corec_plugin_kit.cli import LAZY_COMMANDS
from corec_plugin_kit.runtime.testing import require_service

SHELLS = ["bash", "zsh", "fish"]
BIN = Path(sys.executable).parent

#: What top-level completion must not import: processor code, and what only loading processors
#: or running a command needs (pluggy is in: the package's ``hookimpl`` marker needs it).
FORBIDDEN = (
    "corec_generator",
    "corec_manager",
    "corec_reviser",
    "pydantic",
    "redis",
    "asyncpg",
    "jinja2",
    "corec_plugin_kit.kernel",
    "corec_plugin_kit.plugins",
)

#: Every command of the kit, as the root group mounts them.
KIT_COMMANDS = set(LAZY_COMMANDS)


@dataclass
class Completion:
    """One answer of the completion protocol: the candidates (value, description)."""

    returncode: int
    items: list[tuple[str, str]]
    stdout: str
    stderr: str

    @property
    def values(self) -> list[str]:
        return [value for value, _ in self.items]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COREC_", "_COREC", "COMP_")) and k != "TMUX"
    }
    env.update(extra)
    return env


def parse(shell: str, stdout: str) -> list[tuple[str, str]]:
    """The candidates in each shell's format (click's ``format_completion``)."""
    lines = stdout.strip("\n").splitlines()  # no candidate: click prints an empty line
    if shell == "zsh":  # type, value, description ("_" for none), one a line
        assert len(lines) % 3 == 0, stdout
        triples = [lines[i : i + 3] for i in range(0, len(lines), 3)]
        assert {kind for kind, _, _ in triples} <= {"plain"}, stdout
        return [(value, "" if text == "_" else text) for _, value, text in triples]
    items = []
    for line in lines:  # bash: type,value; fish: type,value<TAB>description
        kind, _, rest = line.partition(",")
        assert kind == "plain", stdout
        value, _, text = rest.partition("\t")
        assert shell == "fish" or not text, stdout
        items.append((value, text))
    return items


def protocol_env(shell: str, line: str) -> dict[str, str]:
    """What the shell's script passes: the line, and the word being completed (its index for
    bash and zsh, the word itself for fish)."""
    words = line.split()
    if shell == "fish":
        cword = "" if line.endswith(" ") else words[-1]
    else:
        cword = str(len(words) if line.endswith(" ") else len(words) - 1)
    return {"_COREC_KIT_COMPLETE": f"{shell}_complete", "COMP_WORDS": line, "COMP_CWORD": cword}


def complete(
    cwd: Path,
    line: str,
    shell: str = "bash",
    env: dict[str, str] | None = None,
    *,
    pythonpath: Sequence[Path] = (),
) -> Completion:
    """``line`` is what was typed before TAB, ``corec-kit`` first."""
    full_env = clean_env(**protocol_env(shell, line), **(env or {}))
    if pythonpath:
        full_env["PYTHONPATH"] = os.pathsep.join(
            [*map(str, pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    proc = subprocess.run(
        [sys.executable, "-m", "corec_plugin_kit"],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=60,
        check=False,
    )
    return Completion(proc.returncode, parse(shell, proc.stdout), proc.stdout, proc.stderr)


def ok(completion: Completion) -> list[str]:
    """The values of a completion that went well: exit 0, nothing on stderr."""
    assert completion.returncode == 0, completion.stderr
    assert completion.stderr == ""
    return completion.values


@pytest.fixture(scope="module")
def all_actions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``corec-kit actions --json``: action -> description, what ``exec <TAB>`` must offer."""
    proc = subprocess.run(
        [sys.executable, "-m", "corec_plugin_kit", "actions", "--json"],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path_factory.mktemp("actions"),
        timeout=60,
        check=True,
    )
    table = json.loads(proc.stdout)
    assert {"ping", "generate_plugin", "review_code", "stats"} <= set(table)
    return {name: row["description"] for name, row in table.items()}


def processor_names() -> list[str]:
    return sorted({ep.name for ep in metadata.entry_points(group="corec.processors")})


# --------------------------------------------------------------------------- fake installs


def install(site: Path, name: str, source: str) -> None:
    """Processor ``name`` as pip would leave it: module ``<name>_proc`` and a dist-info whose
    ``corec.processors`` entry point names it (``site`` goes on PYTHONPATH)."""
    site.mkdir(exist_ok=True)
    (site / f"{name}_proc.py").write_text(source)
    info = site / f"corec_test_{name}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: corec-test-{name}\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text(f"[corec.processors]\n{name} = {name}_proc\n")


MARKED = """
from pathlib import Path

from corec_plugin_kit import hookimpl

Path(__file__).with_name("{marker}").write_text("imported")


async def hello(params, ctx):
    return "hi"


@hookimpl
def corec_register_actions(register):
    register("{action}", hello, description="Say hi")
"""

NOISY = """
import logging
import sys

from corec_plugin_kit import hookimpl

print("noise on stdout at import")
print("noise on stderr at import", file=sys.stderr)
logging.getLogger("noisy").warning("noise in the log at import")


async def act(params, ctx):
    return "done"


@hookimpl
def corec_register_actions(register):
    print("noise while registering")
    register("noisy_act", act, description="A noisy action")


@hookimpl
def corec_cli(group):
    import click

    print("noise while adding commands")
    logging.getLogger("noisy").error("more noise in the log")

    @group.command("speak")
    def speak():
        "Say something."
"""

BROKEN = """
raise RuntimeError("broken on purpose")
"""

BOOM = """
from corec_plugin_kit import hookimpl


@hookimpl
def corec_cli(group):
    import click

    def explode(ctx, param, incomplete):
        raise RuntimeError("this completion explodes")

    @group.command("cmd")
    @click.argument("thing", shell_complete=explode)
    def cmd(thing):
        "Take a thing."
"""


# --------------------------------------------------------------------------- the protocol


@pytest.mark.parametrize("shell", SHELLS)
def test_top_level_commands_and_processor_groups(tmp_path: Path, shell: str) -> None:
    values = ok(complete(tmp_path, "corec-kit ", shell))
    assert KIT_COMMANDS | set(processor_names()) <= set(values)
    assert {"generator", "manager", "reviser"} <= set(values)
    assert ok(complete(tmp_path, "corec-kit list-", shell)) == ["list-processors"]
    options = ok(complete(tmp_path, "corec-kit --", shell))
    assert {"--config", "--load", "--disable", "--plugin", "--strict", "--debug"} <= set(options)


def test_zsh_and_fish_show_descriptions(tmp_path: Path, all_actions: dict[str, str]) -> None:
    for shell in ("zsh", "fish"):
        items = dict(complete(tmp_path, "corec-kit ", shell).items)
        assert items["exec"].startswith("Run one command in-process")
        assert items["manager"].startswith("Commands of the manager processor")
        items = dict(complete(tmp_path, "corec-kit exec pi", shell).items)
        assert items == {"ping": all_actions["ping"]}


@pytest.mark.parametrize("shell", SHELLS)
def test_processor_groups_complete_their_commands(tmp_path: Path, shell: str) -> None:
    """The crash of issue 13: ``corec-kit generator <TAB>`` raised "no active click context"."""
    assert ok(complete(tmp_path, "corec-kit generator ", shell)) == ["plugin", "site"]
    assert ok(complete(tmp_path, "corec-kit reviser ", shell)) == ["review", "revise"]
    assert {"stats", "consumers", "dlq", "console"} <= set(
        ok(complete(tmp_path, "corec-kit manager ", shell))
    )
    assert ok(complete(tmp_path, "corec-kit manager dlq ", shell)) == ["delete", "list", "replay"]
    assert ok(complete(tmp_path, "corec-kit manager dlq re", shell)) == ["replay"]


def test_processor_commands_complete_options_and_choices(tmp_path: Path) -> None:
    options = ok(complete(tmp_path, "corec-kit generator plugin --"))
    assert {"--output", "--kind", "--with-cli", "--dry-run", "--help"} <= set(options)
    assert ok(complete(tmp_path, "corec-kit generator plugin --kind ")) == ["corec", "processor"]
    assert ok(complete(tmp_path, "corec-kit generator site ")) == ["react", "fastapi"]
    assert {"--limit", "--json"} <= set(ok(complete(tmp_path, "corec-kit manager dlq list --")))


@pytest.mark.parametrize(
    "line",
    ["corec-kit exec ", "corec-kit describe ", "corec-kit send ", "corec-kit history --action "],
)
def test_action_names_complete(tmp_path: Path, all_actions: dict[str, str], line: str) -> None:
    assert ok(complete(tmp_path, line)) == sorted(all_actions)


@pytest.mark.parametrize("shell", SHELLS)
def test_action_prefix_filters(tmp_path: Path, all_actions: dict[str, str], shell: str) -> None:
    assert ok(complete(tmp_path, "corec-kit exec pi", shell)) == ["ping"]
    generate = sorted(name for name in all_actions if name.startswith("generate_"))
    assert ok(complete(tmp_path, "corec-kit exec generate_", shell)) == generate
    assert ok(complete(tmp_path, "corec-kit send rev", shell)) == ["review_code", "revise"]
    assert ok(complete(tmp_path, "corec-kit history --action st", shell)) == ["stats"]
    assert ok(complete(tmp_path, "corec-kit exec nothing_is_called_so", shell)) == []


@pytest.mark.parametrize("shell", SHELLS)
def test_processor_names_complete_for_load_and_disable(tmp_path: Path, shell: str) -> None:
    names = processor_names()
    assert {"generator", "manager", "reviser"} <= set(names)
    assert ok(complete(tmp_path, "corec-kit --load ", shell)) == names
    assert ok(complete(tmp_path, "corec-kit --disable ", shell)) == names
    assert ok(complete(tmp_path, "corec-kit --load ma", shell)) == ["manager"]
    # A name already given to that option is not offered again.
    again = ok(complete(tmp_path, "corec-kit --disable manager --disable ", shell))
    assert again == [name for name in names if name != "manager"]


def test_global_options_on_the_line_are_honoured(tmp_path: Path) -> None:
    manager = ok(complete(tmp_path, "corec-kit --load manager exec "))
    assert "ping" in manager and "generate_plugin" not in manager and "review_code" not in manager
    without = ok(complete(tmp_path, "corec-kit --disable manager describe "))
    assert "ping" not in without and "generate_plugin" in without
    (tmp_path / "corec.json").write_text(
        json.dumps({"kernel": {"disable_processors": ["generator"]}})
    )
    configured = ok(complete(tmp_path, "corec-kit -c corec.json exec "))
    assert "generate_plugin" not in configured and "ping" in configured
    assert "generate_plugin" not in ok(
        complete(tmp_path, "corec-kit exec ", env={"COREC_CONFIG": "corec.json"})
    )
    # A config that does not validate: the names come from the processors alone.
    (tmp_path / "bad.json").write_text(json.dumps({"kernel": {"concurrency": "many"}}))
    assert ok(complete(tmp_path, "corec-kit -c bad.json exec pi")) == ["ping"]
    # No processor is left: nothing to complete, no error.
    assert ok(complete(tmp_path, "corec-kit --load nosuch exec ")) == []
    # A disabled processor's group offers no commands.
    assert ok(complete(tmp_path, "corec-kit --disable manager manager ")) == []
    assert ok(complete(tmp_path, "corec-kit --disable manager manager dlq ")) == []


def test_plugin_modules(tmp_path: Path) -> None:
    """``--plugin`` / ``COREC_PLUGINS``: their names complete for ``--load`` without importing
    them, and their actions complete for ``exec`` (which imports them)."""
    (tmp_path / "extra_proc.py").write_text(
        MARKED.format(marker="extra.marker", action="extra_hello")
    )
    marker = tmp_path / "extra.marker"
    load = ok(complete(tmp_path, "corec-kit --plugin extra=extra_proc --load "))
    assert load == sorted([*processor_names(), "extra"])
    assert "extra_proc" in ok(
        complete(tmp_path, "corec-kit --disable ", env={"COREC_PLUGINS": "extra_proc"})
    )
    assert not marker.exists()  # names only: the module was not imported
    assert ok(complete(tmp_path, "corec-kit --plugin extra_proc exec ext")) == ["extra_hello"]
    assert marker.exists()
    assert ok(complete(tmp_path, "corec-kit exec ext", env={"COREC_PLUGINS": "extra_proc"})) == [
        "extra_hello"
    ]
    assert (
        ok(complete(tmp_path, "corec-kit --plugin extra_proc --disable extra_proc exec ext")) == []
    )


def test_a_generated_processor_completes(tmp_path: Path) -> None:
    """A processor made by ``corec-kit generator plugin``, installed (its dist-info on the path):
    its group, its command and its action complete like those of the bundled processors."""
    subprocess.run(
        [sys.executable, "-m", "corec_plugin_kit", "generator", "plugin", "demo_proc", "-o", "."],
        capture_output=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    project = tmp_path / "demo_proc"
    assert (project / "demo_proc" / "processor.py").exists()
    info = project / "demo_proc-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-proc\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[corec.processors]\ndemo_proc = demo_proc.processor\n")
    path = [project]
    for shell in SHELLS:
        assert "demo_proc" in ok(complete(tmp_path, "corec-kit ", shell, pythonpath=path))
        assert ok(complete(tmp_path, "corec-kit demo_proc ", shell, pythonpath=path)) == ["hello"]
        exec_demo = complete(tmp_path, "corec-kit exec demo", shell, pythonpath=path)
        assert ok(exec_demo) == ["demo_proc.hello"]
        assert "demo_proc" in ok(complete(tmp_path, "corec-kit --load d", shell, pythonpath=path))


# --------------------------------------------------------------------------- failures


def test_failures_complete_nothing_and_print_nothing(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install(site, "noisy", NOISY)
    install(site, "broken", BROKEN)
    install(site, "boom", BOOM)
    path = [site]
    # What a processor prints or logs while loading stays out of the answer and the terminal.
    actions = ok(complete(tmp_path, "corec-kit exec ", pythonpath=path))
    assert "noisy_act" in actions and "ping" in actions
    for shell in SHELLS:
        assert ok(complete(tmp_path, "corec-kit noisy ", shell, pythonpath=path)) == ["speak"]
    # A processor that fails to import offers no commands; with --strict, no actions either.
    assert ok(complete(tmp_path, "corec-kit broken ", pythonpath=path)) == []
    assert ok(complete(tmp_path, "corec-kit --strict exec ", pythonpath=path)) == []
    assert "broken" in ok(complete(tmp_path, "corec-kit --load b", pythonpath=path))
    # A processor's own completion that raises: no candidates, no traceback, exit 1.
    for shell in SHELLS:
        boom = complete(tmp_path, "corec-kit boom cmd ", shell, pythonpath=path)
        assert (boom.returncode, boom.stdout, boom.stderr) == (1, "", "")
    assert ok(complete(tmp_path, "corec-kit boom ", pythonpath=path)) == ["cmd"]


# --------------------------------------------------------------------------- what gets imported


def imported_modules(tmp_path: Path, line: str) -> set[str]:
    """Modules the completion of ``line`` imported: ``sys.modules`` written at exit (click's
    completion ends with ``sys.exit``, so atexit runs), as ``test_cli.py`` does."""
    dump = tmp_path / "modules.json"
    dump.unlink(missing_ok=True)
    code = (
        "import atexit, json, pathlib, sys\n"
        f"dump = pathlib.Path({str(dump)!r})\n"
        "atexit.register(lambda: dump.write_text(json.dumps(sorted(sys.modules))))\n"
        "from corec_plugin_kit.cli import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=clean_env(**protocol_env("bash", line)),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout  # it did complete something
    modules = set(json.loads(dump.read_text()))
    assert "corec_plugin_kit.cli.core" in modules  # the dump saw real data
    return modules


def forbidden(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f"{f}.") for f in FORBIDDEN))


@pytest.mark.parametrize(
    "line",
    [
        "corec-kit ",
        "corec-kit ma",
        "corec-kit --",
        "corec-kit --load ",
        "corec-kit --plugin x=y.z --disable ",
        "corec-kit completion ",
        "corec-kit exec --",
    ],
)
def test_top_level_completion_imports_no_processor_code(tmp_path: Path, line: str) -> None:
    assert forbidden(imported_modules(tmp_path, line)) == []


def test_the_import_check_sees_processor_code(tmp_path: Path) -> None:
    """Not blind: completing inside a processor's group imports that processor, and completing an
    action name imports them all (both documented)."""
    assert "corec_generator" in imported_modules(tmp_path, "corec-kit generator ")
    action = imported_modules(tmp_path, "corec-kit exec ")
    assert {"corec_generator", "corec_manager", "corec_reviser", "pydantic"} <= action


# --------------------------------------------------------------------------- a real bash


class Tmux:
    """A tmux server of its own (``-L``) running one interactive bash in session ``t``."""

    def __init__(self, exe: str, env: dict[str, str], cwd: Path) -> None:
        self.exe = exe
        self.socket = f"corec-complete-{uuid.uuid4().hex[:12]}"
        self.env = env
        self.cwd = cwd
        self.socket_path: str | None = None

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(
            [self.exe, "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
            timeout=30,
            check=True,
        )
        return proc.stdout

    def type(self, text: str, *keys: str) -> None:
        if text:
            self("send-keys", "-t", "t", "-l", text)
        for key in keys:
            self("send-keys", "-t", "t", key)

    def pane(self) -> str:
        return self("capture-pane", "-p", "-J", "-S", "-1000", "-t", "t")

    def kill(self) -> None:
        """Stop the server and remove its socket (``kill-server`` leaves the file behind)."""
        subprocess.run(
            [self.exe, "-L", self.socket, "kill-server"],
            capture_output=True,
            env=self.env,
            timeout=30,
            check=False,
        )
        if self.socket_path:
            Path(self.socket_path).unlink(missing_ok=True)


@pytest.fixture
def bash_in_tmux(tmp_path: Path) -> Iterator[Tmux]:
    """``bash --norc -i`` in a detached tmux session: PATH starts with this venv's bin (where
    ``corec-kit`` is), HOME is a fresh folder, no ``COREC_*`` variable."""
    exe = shutil.which("tmux")
    require_service(exe is not None, "tmux", "is not installed")
    assert exe is not None
    require_service(shutil.which("bash") is not None, "bash", "is not installed")
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        HOME=str(home),
        TERM="xterm-256color",
        PS1="$ ",
    )
    tmux = Tmux(exe, env, tmp_path)
    try:
        tmux("new-session", "-d", "-s", "t", "-x", "220", "-y", "50", "bash", "--norc", "-i")
        tmux.socket_path = tmux("display-message", "-p", "-t", "t", "#{socket_path}").strip()
        yield tmux
    finally:
        tmux.kill()


def test_interactive_bash_completes(bash_in_tmux: Tmux) -> None:
    tmux = bash_in_tmux
    step = iter(range(1, 100))

    def wait_for(predicate: Callable[[], object], what: str) -> None:
        try:
            wait_until(predicate, 60, what)
        except AssertionError as exc:  # show what the terminal showed
            raise AssertionError(f"{exc}; the pane:\n{tmux.pane()}") from None

    def fresh() -> str:
        """Empty the line, print a marker only the output has; the text after it is new.

        The line is emptied with readline's keys (end of line, kill to its start), not Ctrl-C:
        a SIGINT that lands while bash finishes a completion can be lost."""
        marker = f"step-{next(step)}-"
        tmux.type("", "C-e", "C-u")
        tmux.type(f'echo "{marker}$((6*7))"', "Enter")
        wait_for(lambda: f"{marker}42\n" in tmux.pane(), f"the shell to print {marker}42")
        return f"{marker}42\n"

    def after(marker: str) -> str:
        return tmux.pane().rsplit(marker, 1)[-1]

    def shows(marker: str, *words: str) -> bool:
        text = after(marker)
        return "Traceback" in text or set(words) <= set(text.split())

    marker = fresh()
    tmux.type('eval "$(corec-kit completion bash)"; complete -p corec-kit', "Enter")
    wait_for(lambda: "_corec_kit_completion corec-kit" in after(marker), "complete -p")

    # Inside a processor group: TAB TAB lists its commands.
    marker = fresh()
    tmux.type("corec-kit generator ", "Tab", "Tab")
    wait_for(lambda: shows(marker, "plugin", "site"), "generator's commands")
    assert "Traceback" not in after(marker)

    marker = fresh()
    tmux.type("corec-kit manager dlq ", "Tab", "Tab")
    wait_for(lambda: shows(marker, "list", "replay"), "manager dlq's commands")
    assert "Traceback" not in after(marker)

    # An action name: one TAB completes the only match.
    marker = fresh()
    tmux.type("corec-kit exec pi", "Tab")
    wait_for(lambda: "corec-kit exec ping" in after(marker), "exec pi<TAB> -> ping")
    assert "Traceback" not in after(marker)

    # A processor name for --load.
    marker = fresh()
    tmux.type("corec-kit --load ma", "Tab")
    wait_for(lambda: "corec-kit --load manager" in after(marker), "--load ma<TAB> -> manager")

    assert "Traceback" not in tmux.pane()
    assert "no active click context" not in tmux.pane()
