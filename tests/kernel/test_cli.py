"""``corec-kit`` through real subprocesses of the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import corec_plugin_kit

Kit = Callable[..., Any]

FAILING = """
from corec_plugin_kit import HandlerError, hookimpl

async def refuse(params, ctx):
    raise HandlerError("no, on purpose")

async def ping(params, ctx):
    return "rival pong"

@hookimpl
def corec_register_actions(register):
    register("refuse", refuse)
"""


def test_version(kit: Kit) -> None:
    run = kit("--version")
    assert run.returncode == 0
    first, *rest = run.stdout.splitlines()
    assert first.startswith(f"corec-kit {corec_plugin_kit.__version__} (corec-plugin-kit")
    listed = {line.split(":")[0].strip() for line in rest}
    assert {"generator", "manager", "reviser"} <= listed
    assert "  manager: corec-manager 0.1.0" in rest


def test_list_processors_json(kit: Kit) -> None:
    run = kit("list-processors", "--json")
    assert run.returncode == 0, run.stderr
    infos = {info["name"]: info for info in run.json()}
    expected = {
        "generator": ("corec-generator", {"generate_plugin", "generate_website"}),
        "reviser": ("corec-reviser", {"review_code"}),
        "manager": ("corec-manager", {"ping", "health", "list_processors", "describe_action"}),
    }
    for name, (dist, actions) in expected.items():
        info = infos[name]
        assert info["status"] == "loaded", info
        assert info["distribution"] == dist
        assert info["reason"] is None
        assert info["version"]
        assert actions <= set(info["actions"])
    text = kit("list-processors")
    assert text.returncode == 0
    assert any(line.startswith("manager") and "loaded" in line for line in text.stdout.splitlines())


def test_list_processors_disable_and_load(kit: Kit) -> None:
    run = kit("--disable", "reviser", "list-processors", "--json")
    status = {info["name"]: info["status"] for info in run.json()}
    assert status["reviser"] == "disabled"
    assert status["manager"] == "loaded"
    run = kit("list-processors", "--json", env={"COREC_LOAD_PROCESSORS": "manager"})
    status = {info["name"]: info["status"] for info in run.json()}
    assert status == {"generator": "disabled", "manager": "loaded", "reviser": "disabled"} | {
        k: v for k, v in status.items() if k not in {"generator", "manager", "reviser"}
    }


def test_list_processors_honours_the_config_file(kit: Kit, tmp_path: Path) -> None:
    (tmp_path / "corec.json").write_text(
        json.dumps({"kernel": {"disable_processors": ["generator"]}})
    )
    status = {info["name"]: info["status"] for info in kit("list-processors", "--json").json()}
    assert status["generator"] == "disabled"


def test_actions_json(kit: Kit) -> None:
    run = kit("actions", "--json")
    assert run.returncode == 0, run.stderr
    table = run.json()
    assert table["ping"]["processor"] == "manager"
    assert table["ping"]["distribution"] == "corec-manager"
    assert table["review_code"]["processor"] == "reviser"
    assert table["generate_plugin"]["processor"] == "generator"
    assert "ping" in kit("actions").stdout


def test_describe(kit: Kit) -> None:
    run = kit("describe", "ping")
    assert run.returncode == 0
    described = run.json()
    assert described["action"] == "ping"
    assert described["params_schema"]["type"] == "object"
    assert "echo" in described["params_schema"]["properties"]
    missing = kit("describe", "nope")
    assert missing.returncode == 2
    assert missing.stderr.startswith("Error: unknown action 'nope'")


def test_exec_ping_ok(kit: Kit) -> None:
    run = kit("exec", "ping", "-p", "echo=hi", "--id", "cli-1")
    assert run.returncode == 0, run.stderr
    envelope = run.json()
    assert envelope["status"] == "ok"
    assert envelope["id"] == "cli-1"
    assert envelope["result"]["pong"] is True
    assert envelope["result"]["echo"] == "hi"
    typed = kit("exec", "ping", "--params", '{"echo": [1]}', "-p", "echo:=2")
    assert typed.json()["result"]["echo"] == 2  # -p wins over --params


def assert_one_line_error(stderr: str) -> None:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ")


def test_exec_unknown_action_exit_2(kit: Kit) -> None:
    run = kit("exec", "no_such_action")
    assert run.returncode == 2
    assert run.json()["error"]["type"] == "unknown_action"
    assert_one_line_error(run.stderr)


def test_exec_invalid_params_exit_2(kit: Kit) -> None:
    run = kit("exec", "describe_action", "-p", "unexpected=1")
    assert run.returncode == 2
    error = run.json()["error"]
    assert error["type"] == "invalid_params"
    assert {d["loc"] for d in error["details"]} == {"action", "unexpected"}
    assert_one_line_error(run.stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--params", "{nope"], "--params is not valid JSON"),
        (["--params", "[1]"], "--params must be a JSON object"),
        (["-p", "novalue"], "write key=value"),
        (["-p", "=x"], "the key is empty"),
        (["-p", "k:=nope"], "must be JSON"),
    ],
)
def test_exec_bad_param_syntax_exit_2(kit: Kit, args: list[str], message: str) -> None:
    run = kit("exec", "ping", *args)
    assert run.returncode == 2
    assert_one_line_error(run.stderr)
    assert message in run.stderr


def test_exec_handler_error_exit_1(kit: Kit, tmp_path: Path) -> None:
    (tmp_path / "refuser.py").write_text(FAILING)
    run = kit("--plugin", "refuser", "exec", "refuse")
    assert run.returncode == 1, run.stderr
    assert run.json()["error"] == {
        "type": "handler_error",
        "message": "no, on purpose",
        "details": None,
    }
    assert_one_line_error(run.stderr)


def test_conflict_exit_4_names_both(kit: Kit, tmp_path: Path) -> None:
    (tmp_path / "rival.py").write_text(FAILING + '    register("ping", ping)\n')
    for args in (["exec", "ping"], ["actions"]):
        run = kit("--plugin", "rival", *args)
        assert run.returncode == 4
        assert_one_line_error(run.stderr)
        assert "'ping' is claimed by both" in run.stderr
        assert "manager (corec-manager)" in run.stderr
        assert " rival " in run.stderr
    pinned = kit(
        "--plugin",
        "rival",
        "exec",
        "ping",
        env={"COREC_KERNEL__ACTION_OWNERS": '{"ping": "rival"}'},
    )
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.json()["result"] == "rival pong"


def test_config_error_exit_3(kit: Kit) -> None:
    run = kit("exec", "ping", env={"COREC_KERNEL__CONCURRENCY": "0", "COREC_MANAGER__X": "1"})
    assert run.returncode == 3
    assert_one_line_error(run.stderr)
    assert "kernel.concurrency" in run.stderr


def test_strict_list_processors_exit_4(kit: Kit, tmp_path: Path) -> None:
    (tmp_path / "halfway.py").write_text("raise ImportError('missing dependency foo')")
    run = kit("--plugin", "halfway", "list-processors", "--json")
    assert run.returncode == 0
    info = {i["name"]: i for i in run.json()}["halfway"]
    assert info["status"] == "failed"
    assert "missing dependency foo" in info["reason"]
    strict = kit("--plugin", "halfway", "list-processors", "--strict")
    assert strict.returncode == 4
    assert "halfway" in strict.stderr
    global_strict = kit("--plugin", "halfway", "--strict", "actions")
    assert global_strict.returncode == 4
    assert_one_line_error(global_strict.stderr)


def test_debug_shows_the_traceback(kit: Kit) -> None:
    run = kit("--debug", "describe", "nope")
    assert run.returncode != 0
    assert "Traceback (most recent call last)" in run.stderr
    assert "UnknownAction" in run.stderr


def test_processor_group_is_mounted(kit: Kit) -> None:
    run = kit("manager", "--help")
    assert run.returncode == 0
    assert "Usage: corec-kit manager" in run.stdout
    gone = kit("--disable", "manager", "manager", "anything")
    assert gone.returncode != 0
    assert "processor 'manager' is not available (disabled" in gone.stderr


def test_unknown_command_is_a_usage_error(kit: Kit) -> None:
    run = kit("frobnicate")
    assert run.returncode == 2
    assert "No such command 'frobnicate'" in run.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(kit: Kit, shell: str) -> None:
    run = kit("completion", shell)
    assert run.returncode == 0
    assert "_COREC_KIT_COMPLETE" in run.stdout
    assert f"{shell}_complete" in run.stdout


def complete(kit: Kit, shell: str, words: str, cword: int | None = None) -> Any:
    env = {"_COREC_KIT_COMPLETE": f"{shell}_complete", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(cword if cword is not None else len(words.split()) - 1)
    if shell == "fish":  # fish passes the incomplete word itself
        env["COMP_CWORD"] = "" if words.endswith(" ") else words.split()[-1]
    return kit(env=env)


def test_bash_completion_really_completes(kit: Kit) -> None:
    run = complete(kit, "bash", "corec-kit ", 1)
    assert run.returncode == 0
    candidates = [line.split(",", 1)[1] for line in run.stdout.splitlines()]
    assert {"list-processors", "exec", "actions", "completion", "manager"} <= set(candidates)
    run = complete(kit, "bash", "corec-kit list-")
    assert run.stdout.splitlines() == ["plain,list-processors"]
    run = complete(kit, "bash", "corec-kit completion ", 2)
    assert [line.split(",", 1)[1] for line in run.stdout.splitlines()] == ["bash", "zsh", "fish"]


def test_bash_completion_through_bash_itself(kit: Kit, tmp_path: Path) -> None:
    """Source the generated script in a real bash and call its completion function."""
    script = kit("completion", "bash").stdout
    (tmp_path / "complete.sh").write_text(script)
    driver = (
        f"source {tmp_path / 'complete.sh'}\n"
        "COMP_WORDS=(corec-kit list-); COMP_CWORD=1\n"
        "_corec_kit_completion corec-kit\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COREC_", "_COREC"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(
        ["bash", "-c", driver], capture_output=True, text=True, env=env, cwd=tmp_path, check=False
    )
    assert proc.stdout.split() == ["list-processors"], proc.stderr


def test_zsh_and_fish_completion_protocols(kit: Kit) -> None:
    zsh = complete(kit, "zsh", "corec-kit list-")
    assert "list-processors" in zsh.stdout.splitlines()
    fish = complete(kit, "fish", "corec-kit list-")
    assert fish.stdout.splitlines()[0].startswith("plain,list-processors")


FORBIDDEN = (
    "pydantic",
    "redis",
    "asyncpg",
    "jinja2",
    "corec_generator",
    "corec_reviser",
    "corec_manager",
)


def imported_modules(tmp_path: Path, env: dict[str, str]) -> set[str]:
    """Modules ``corec-kit`` imported: ``python -X importtime`` on stderr, plus ``sys.modules``.

    importtime is the tool the issue names; the ``sys.modules`` dump at exit backs it up for
    imports that an import hook (editable installs) may keep out of importtime's report.
    """
    dump = tmp_path / "modules.json"
    code = (
        "import atexit, json, sys\n"
        f"dump = {str(dump)!r}\n"
        "atexit.register(lambda: open(dump, 'w').write(json.dumps(sorted(sys.modules))))\n"
        "from corec_plugin_kit.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("COREC_", "_COREC"))}
    full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, *env.get("ARGS", "").split()],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.add(name)
    assert "corec_plugin_kit.cli" in modules  # the parse saw real data
    modules.update(json.loads(dump.read_text()))
    return modules


@pytest.mark.parametrize(
    "env",
    [
        {"ARGS": "--help"},
        {"ARGS": "exec --help"},
        {"_COREC_KIT_COMPLETE": "bash_complete", "COMP_WORDS": "corec-kit ", "COMP_CWORD": "1"},
        {"_COREC_KIT_COMPLETE": "zsh_complete", "COMP_WORDS": "corec-kit li", "COMP_CWORD": "1"},
    ],
    ids=["help", "exec-help", "complete-bash", "complete-zsh"],
)
def test_help_and_completion_import_nothing_heavy(tmp_path: Path, env: dict[str, str]) -> None:
    modules = imported_modules(tmp_path, env)
    heavy = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)
    assert heavy == []


def test_the_import_check_would_see_heavy_imports(tmp_path: Path) -> None:
    """The parse above is not blind: running a command that needs pydantic shows it."""
    modules = imported_modules(tmp_path, {"ARGS": "exec ping"})
    assert "pydantic" in modules
    assert "corec_manager.processor" in modules


def test_check_reports_each_part_with_its_exit_code(kit: Kit, tmp_path: Path) -> None:
    # Nothing listens on port 1: Redis is really unreachable.
    down = {"COREC_REDIS_URL": "redis://127.0.0.1:1/0", "COREC_KERNEL__RECORDS": "false"}
    run = kit("check", "--json", env=down)
    assert run.returncode == 5, run.stderr
    report = run.json()
    assert report["config"]["ok"] is True
    assert report["processors"]["ok"] is True
    assert report["redis"]["ok"] is False
    text = kit("check", env=down)
    assert text.returncode == 5
    assert "[ok ] config" in text.stdout
    assert "[FAIL] redis" in text.stdout
    (tmp_path / "bad.json").write_text('{"kernel": {"concurrency": 0}}')
    bad = kit("check", "bad.json")
    assert bad.returncode == 3
    assert "kernel.concurrency" in bad.stdout


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``corec-kit actions | head -1``: the reader is gone before the output is written. The
    command stops quietly with SIGPIPE's exit status, no "Internal error", no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left already: the first write fails (EPIPE)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "corec_plugin_kit", "actions"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=tmp_path, check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("COREC_")},
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.returncode == 141
    assert proc.stderr == ""
