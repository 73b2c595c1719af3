"""``corec-kit send --wait`` when no answer comes: it says at once that no worker reads the
stream, shows its progress on a terminal, and its final error says how the group stands.
Through the real CLI (a pseudo-terminal for the progress)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from typing import Any

import redis
from runtime_helpers import subprocess_env

CLI = [sys.executable, "-m", "corec_plugin_kit"]


def test_no_worker_is_said_at_once_and_in_the_error(corec_streams: dict[str, Any]) -> None:
    env = subprocess_env(corec_streams)
    started = time.monotonic()
    done = subprocess.run(
        [*CLI, "send", "echo", "-p", "n:=1", "--wait", "--timeout", "2"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    group = corec_streams["group"]
    first, *rest = done.stderr.strip().splitlines()
    assert first == (
        f"Warning: {corec_streams['stream_in']}: no worker reads it: the group {group} has no "
        "consumer; start one with `corec-kit run`; waiting anyway"
    )
    assert rest[-1].startswith("Error: no result for ")
    assert f"within 2s; it stays queued on {corec_streams['stream_in']}" in rest[-1]
    assert "start one with `corec-kit run`" in rest[-1]
    assert "waiting for the result" not in done.stderr  # no progress line off a terminal
    assert time.monotonic() - started < 30


def test_a_stuck_group_is_described(corec_streams: dict[str, Any], corec_redis_url: str) -> None:
    r = redis.Redis.from_url(corec_redis_url)
    try:
        r.xgroup_create(corec_streams["stream_in"], corec_streams["group"], id="$", mkstream=True)
        r.xgroup_createconsumer(corec_streams["stream_in"], corec_streams["group"], "stuck")
    finally:
        r.close()
    done = subprocess.run(
        [*CLI, "send", "echo", "-p", "n:=1", "--wait", "--timeout", "1"],
        env=subprocess_env(corec_streams), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Warning" not in done.stderr  # a consumer exists: nothing to say up front
    assert (
        f"(1 consumer(s) in the group {corec_streams['group']}, 0 entries pending, lag 1: the "
        "workers are busy or stuck; see `corec-kit manager stats`)"
    ) in done.stderr


def test_progress_on_a_terminal(corec_streams: dict[str, Any]) -> None:
    main, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*CLI, "send", "echo", "-p", "n:=1", "--wait", "--timeout", "3"],
            env=subprocess_env(corec_streams), stdout=subprocess.PIPE, stderr=secondary,
        )  # fmt: skip
        os.close(secondary)
        seen = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the terminal closed: the process ended
                break
            if not chunk:
                break
            seen += chunk
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    finally:
        os.close(main)
    text = seen.decode()
    assert proc.returncode == 1
    assert "\rwaiting for the result: 1s of 3s" in text
    assert "\rwaiting for the result: 2s of 3s" in text
    assert "\r\x1b[K" in text  # the status line is cleared before the error
    assert "Error: no result for " in text
