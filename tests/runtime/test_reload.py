"""A processor installed while a worker runs: the worker says so for its actions, and
``SIGHUP`` loads it without dropping the command in flight. Through the real CLI.

"Installing" writes what ``pip install --target DIR`` writes (the module and its
``.dist-info`` with ``entry_points.txt``) into a folder on the worker's ``PYTHONPATH`` that
was empty when the worker started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import subprocess_env
from shared_helpers import wait_until

CLI = [sys.executable, "-m", "corec_plugin_kit"]

GREET = """
from pydantic import BaseModel

from corec_plugin_kit import hookimpl


class Name(BaseModel):
    name: str = "you"
    n: int = 0


async def greet(params, ctx):
    return {"greeting": "hello " + params.name}


async def echo(params, ctx):
    return "a rival echo"


@hookimpl
def corec_register_actions(register):
    register("{action}", {action}, Name)
"""


def install(site: Path, name: str, action: str) -> None:
    """What ``pip install --target site`` leaves for a processor distribution ``name``."""
    (site / f"{name}.py").write_text(GREET.replace("{action}", action))
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[corec.processors]\n{name} = {name}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def worker_env(corec_streams: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    env = subprocess_env(corec_streams)
    env.pop("COREC_LOAD_PROCESSORS")  # every installed processor, new ones included
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    env["SITE"] = str(site)
    env["LOG"] = str(tmp_path / "worker.log")
    return env


def send(env: dict[str, str], action: str, *params: str) -> dict[str, Any]:
    done = subprocess.run(
        [*CLI, "send", action, *params, "--wait", "--timeout", "30"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_sighup_loads_a_processor_installed_after_start(worker_env: dict[str, str]) -> None:
    site = Path(worker_env["SITE"])
    worker = subprocess.Popen([*CLI, "run"], env=worker_env, stderr=subprocess.PIPE, text=True)
    try:
        first = send(worker_env, "greet", "-p", "name=ada")
        assert first["error"]["type"] == "unknown_action"
        assert "installed after" not in first["error"]["message"]
        install(site, "greet_proc", "greet")
        # The worker does not know greet yet, and says why (its scan of what is installed is
        # at most two seconds old).
        said: list[dict[str, Any]] = []

        def explained() -> bool:
            said.append(send(worker_env, "greet", "-p", "name=ada"))
            return "installed after this worker started" in said[-1]["error"]["message"]

        wait_until(explained, timeout=30, interval=0.5, what="the unknown action to be explained")
        message = said[-1]["error"]["message"]
        assert "greet_proc" in message and "SIGHUP" in message
        assert said[-1]["error"]["details"]["installed_since_start"] == ["greet_proc"]
        # A command in flight while the worker reloads finishes normally.
        sleeper = subprocess.Popen(
            [*CLI, "send", "sleep", "-p", "seconds:=2", "--wait", "--timeout", "30"],
            env=worker_env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        worker.send_signal(signal.SIGHUP)
        wait_until(
            lambda: send(worker_env, "greet", "-p", "name=ada")["status"] == "ok",
            timeout=30, interval=0.5, what="greet to be answered after SIGHUP",
        )  # fmt: skip
        assert send(worker_env, "greet", "-p", "name=ada")["result"] == {"greeting": "hello ada"}
        out, _ = sleeper.communicate(timeout=60)
        slept = json.loads(out)
        assert slept["status"] == "ok" and slept["attempt"] == 1
        # Echo (echo_proc's) still answers as before.
        assert send(worker_env, "echo", "-p", "n:=3")["result"]["n"] == 3
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err[-3000:]
    assert "SIGHUP: loaded greet_proc" in err


def test_a_new_processor_that_conflicts_is_left_out(worker_env: dict[str, str]) -> None:
    site = Path(worker_env["SITE"])
    log = Path(worker_env["LOG"])
    with log.open("w") as sink:
        worker = subprocess.Popen([*CLI, "run"], env=worker_env, stderr=sink, text=True)
    try:
        assert send(worker_env, "echo", "-p", "n:=1")["status"] == "ok"  # the worker is up
        install(site, "rival_proc", "echo")  # claims echo_proc's action
        worker.send_signal(signal.SIGHUP)
        # The worker goes on, echo still goes to echo_proc. (The sender loads only echo_proc:
        # with both installed, its own kernel would refuse the conflict.)
        sender = {**worker_env, "COREC_LOAD_PROCESSORS": "echo_proc"}
        wait_until(lambda: "rival_proc" in Path(worker_env["LOG"]).read_text(), what="the reload")
        for n in range(3):
            answer = send(sender, "echo", "-p", f"n:={n}")
            assert answer["status"] == "ok" and answer["processor"] == "echo_proc"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    err = log.read_text()
    assert worker.returncode == 0, err[-3000:]
    assert "processor 'rival_proc' (rival_proc 0.1) failed: action 'echo' is claimed by" in err
    assert "SIGHUP: no new processor to load" in err


def test_the_supervisor_passes_sighup_to_every_worker(worker_env: dict[str, str]) -> None:
    site = Path(worker_env["SITE"])
    log = Path(worker_env["LOG"])
    with log.open("w") as sink:
        supervisor = subprocess.Popen(
            [*CLI, "run", "--workers", "2"], env=worker_env, stderr=sink, text=True
        )
    try:
        wait_until(
            lambda: log.read_text().count("corec-kit run:") >= 3,  # the supervisor's + 2
            what="both workers to start",
        )
        install(site, "greet_proc", "greet")
        supervisor.send_signal(signal.SIGHUP)
        wait_until(
            lambda: log.read_text().count("SIGHUP: loaded greet_proc") == 2,
            what="both workers to load greet_proc",
        )
        assert send(worker_env, "greet", "-p", "name=bo")["result"] == {"greeting": "hello bo"}
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=60)
    assert supervisor.returncode == 0, log.read_text()[-3000:]
    assert "restarting" not in log.read_text()


def test_a_worker_that_said_it_started_already_handles_sighup(worker_env: dict[str, str]) -> None:
    # The start-up line is the sign, for a supervisor or a script, that the worker is up: a
    # SIGHUP sent the moment it appears must be handled, never end the worker (Python's
    # default for SIGHUP), whatever start-up still does after logging it.
    log = Path(worker_env["LOG"])
    with log.open("w") as sink:
        worker = subprocess.Popen([*CLI, "run"], env=worker_env, stderr=sink, text=True)
    try:
        wait_until(lambda: "corec-kit run:" in log.read_text(), interval=0.001, what="start")
        worker.send_signal(signal.SIGHUP)
        wait_until(
            lambda: "SIGHUP: no new processor to load" in log.read_text() or worker.poll(),
            what="the worker to handle SIGHUP",
        )
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    assert worker.returncode == 0, log.read_text()[-3000:]
