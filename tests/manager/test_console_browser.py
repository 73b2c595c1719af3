"""The console in a real headless Chromium (Debian's ``chromium``, driven by Playwright's
Python API through ``executable_path``), with a real worker, Redis and record store.

Each test takes the screenshots docs/console.md shows: into ``COREC_CONSOLE_SCREENSHOTS``
when set (``scripts/console-screenshots`` sets it to docs/images/console), else a temporary
folder, so they are taken, and looked at, on every run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as syncredis
from console_helpers import Console, console_env, start_console, start_worker, stop
from playwright.sync_api import Browser, Page, expect, sync_playwright
from shared_helpers import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium_path() -> str:
    """Debian's Chromium (``COREC_CHROMIUM`` overrides); missing, the test fails in CI and is
    skipped, with the reason, elsewhere."""
    found = os.environ.get("COREC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).exists():
        message = f"no Chromium at {found}: apt-get install chromium (or set COREC_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("COREC_CONSOLE_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture
def r(corec_redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(corec_redis_url)
    yield client
    client.close()


@pytest.fixture
def corec_streams(corec_redis_url: str, r: syncredis.Redis) -> Iterator[dict[str, Any]]:
    """Unique streams, as the kit's own ``corec_streams`` fixture gives them, but set up
    without an event loop: Playwright's sync API runs one in this thread, and pytest-asyncio's
    async fixtures cannot start theirs beside it."""
    tag = uuid.uuid4().hex[:12]
    yield {
        "redis_url": corec_redis_url,
        "stream_in": f"{{b{tag}}}:commands",
        "stream_out": f"{{b{tag}}}:results",
        "dead_letter_stream": f"{{b{tag}}}:dead",
        "group": f"g{tag}",
    }
    keys = list(r.scan_iter(match=f"{{b{tag}}}*"))
    if keys:
        r.delete(*keys)


@pytest.fixture
def down_file(tmp_path: Path) -> Path:
    return tmp_path / "dependency-down"


@pytest.fixture
def env(corec_streams: dict[str, Any], tmp_path: Path, down_file: Path) -> dict[str, str]:
    values = console_env(corec_streams, tmp_path, max_deliveries=1, claim_idle_ms=500)
    return {**values, "ECHO_DOWN_FILE": str(down_file)}


@pytest.fixture
def worker(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_worker(env)
    yield proc
    stop(proc)


@pytest.fixture
def console(env: dict[str, str]) -> Iterator[Console]:
    running = start_console(env)
    yield running
    running.stop()


def sign_in(page: Page, console: Console, path: str = "/") -> None:
    assert console.token is not None
    page.goto(f"{console.origin}{path}?token={console.token}")
    expect(page.locator("#signed-in")).to_be_visible()
    assert "token=" not in page.url  # the redirect dropped it


def send(r: syncredis.Redis, streams: dict[str, Any], action: str, params: dict[str, Any],
         key: str) -> None:  # fmt: skip
    body = {"action": action, "params": params, "id": key}
    r.xadd(streams["stream_in"], {"payload": orjson.dumps(body)})


def test_the_overview_counts_commands_as_they_flow(
    page: Page, console: Console, worker: Any, r: syncredis.Redis,
    corec_streams: dict[str, Any], shots: Path,
) -> None:  # fmt: skip
    sign_in(page, console)
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator("#workers")).to_have_text("1", timeout=15_000)
    before = int(page.locator("#processed").inner_text())
    for i in range(300):
        send(r, corec_streams, "echo", {"n": i}, f"a{i}")
    for i in range(5):
        send(r, corec_streams, "fail", {}, f"f{i}")
    # The page reloads its figures by itself (no navigation): the counter moves.
    wait_until(lambda: int(page.locator("#processed").inner_text()) >= before + 305,
               timeout=30, what="the processed counter to count 305 more")  # fmt: skip
    row = page.locator('#actions tr[data-action="echo"]')
    expect(row.locator(".total")).to_have_text("300", timeout=10_000)
    assert float(row.locator(".rate").inner_text()) > 0
    expect(page.locator('#actions tr[data-action="fail"] .errors')).to_contain_text(
        "handler_error 5", timeout=10_000
    )
    for i in range(300, 400):  # keep a little traffic in the picture
        send(r, corec_streams, "echo", {"n": i}, f"a{i}")
    page.wait_for_timeout(2500)
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    page.select_option('select[name="window"]', "300")  # the page's script submits it
    expect(page.locator("#actions thead")).to_contain_text("cmd/s (5 min)")
    assert "window=300" in page.url
    page.goto(f"{console.origin}/workers")
    alive = page.locator("#worker-table tr.alive")
    expect(alive).to_have_count(1)
    expect(alive.locator("td").nth(3)).to_have_text(str(worker.pid))
    expect(alive.locator("td.processors")).to_contain_text("echo_proc")
    page.screenshot(path=str(shots / "workers.png"), full_page=True)
    page.goto(f"{console.origin}/history?action=echo&limit=20")
    expect(page.locator("#history-table tbody tr")).to_have_count(20)
    page.locator("#history-table details summary").first.click()
    page.screenshot(path=str(shots / "history.png"), full_page=True)
    # The filters: a time range (the browser's local time, sent as UTC) and a status.
    form = page.locator("#history-form")
    form.locator('input[name="action"]').fill("")
    form.locator('select[name="status"]').select_option("error")
    form.locator('button[type="submit"]').click()
    expect(page.locator("#history-table tbody tr")).to_have_count(5)
    expect(page.locator("#history-table")).to_contain_text("f4")
    assert "action=" not in page.url  # empty filters stay out of the URL
    page.locator('#history-form input[name="until"]').fill("2000-01-01T00:00:00")
    page.locator('#history-form button[type="submit"]').click()
    expect(page.locator("#history-table")).to_contain_text("no records match")
    assert "until=2000-01-01T" in page.url and "Z" in page.url.split("until=")[1]


def test_a_dead_letter_is_replayed_from_the_page_and_answered(
    page: Page, console: Console, worker: Any, r: syncredis.Redis,
    corec_streams: dict[str, Any], down_file: Path, shots: Path,
) -> None:  # fmt: skip
    down_file.touch()  # the dependency is down: the command is dead-lettered
    send(r, corec_streams, "needs_dependency", {"n": 4}, "dep-1")
    send(r, corec_streams, "fail", {}, "other-1")
    wait_until(lambda: r.xlen(corec_streams["dead_letter_stream"]) >= 1, timeout=30,
               what="the dead letter")  # fmt: skip
    down_file.unlink()  # back up: a replay will succeed
    sign_in(page, console, "/dead-letters")
    row = page.locator("#dlq-table tbody tr[data-ref]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("needs_dependency")
    expect(row).to_contain_text("handler_error")  # the last failure's type, not dead_letter
    expect(row).to_contain_text("the echo dependency is down")
    assert "1970" not in row.inner_text()  # failed_at (ISO 8601) shown as a date
    ref = row.get_attribute("data-ref")
    page.screenshot(path=str(shots / "dead-letters.png"), full_page=True)
    page.locator(f'#dlq-table a[href*="{ref}"]').click()
    expect(page.locator("#entry-fields")).to_contain_text("dep-1")
    page.screenshot(path=str(shots / "dead-letter.png"), full_page=True)
    page.go_back()
    page.locator('input[name="ref"]').first.check()
    page.locator("#replay-selected").click()
    expect(page.locator("#dlq-outcome")).to_contain_text("replayed 1")
    answer = page.locator('#answers li[data-key="dep-1"] .badge.answer')
    expect(answer).to_have_text("ok", timeout=30_000)
    expect(page.locator('#answers li[data-key="dep-1"] pre')).to_contain_text('"attempt": 1')
    expect(page.locator("#dlq-table tbody tr[data-ref]")).to_have_count(0)
    assert r.xlen(corec_streams["dead_letter_stream"]) == 0


def test_a_command_sent_from_an_actions_form_is_answered_on_the_page(
    page: Page, console: Console, worker: Any, shots: Path
) -> None:
    sign_in(page, console, "/processors")
    expect(page.locator('#processor-table tr[data-processor="manager"]')).to_contain_text("loaded")
    page.screenshot(path=str(shots / "processors.png"), full_page=True)
    page.locator('#action-table a[href="/actions/echo"]').click()
    expect(page.locator("h1")).to_have_text("echo")
    page.fill("#f-n", "5")
    page.fill("#f-text", "hello from the form")
    page.locator("#send-form button[type=submit]").click()
    expect(page.locator("#send-outcome")).to_have_text("ok", timeout=30_000)
    expect(page.locator("#send-result")).to_contain_text("hello from the form")
    page.screenshot(path=str(shots / "action.png"), full_page=True)
    # A value the schema refuses: the worker's own validation answers on the page.
    page.fill("#f-n", "")
    page.locator("#send-form button[type=submit]").click()
    expect(page.locator("#send-outcome")).to_have_text("error", timeout=30_000)
    expect(page.locator("#send-result")).to_contain_text("invalid_params")


def test_without_the_token_the_page_cannot_replay_or_delete(
    page: Page, console: Console, r: syncredis.Redis, corec_streams: dict[str, Any]
) -> None:
    send(r, corec_streams, "echo", {"n": 1}, "x")  # nobody reads: make a dead letter by hand
    fields = {"payload": orjson.dumps({"action": "echo", "params": {"n": 1}, "id": "z1"}),
              "error": orjson.dumps({"type": "handler_error", "message": "no"}),
              "deliveries": "1"}  # fmt: skip
    ref = r.xadd(corec_streams["dead_letter_stream"], fields).decode()
    page.goto(f"{console.origin}/dead-letters")  # loopback: readable without signing in
    expect(page.locator("#read-only")).to_be_visible()
    expect(page.locator("#replay-selected")).to_be_disabled()
    expect(page.locator("#delete-all")).to_be_disabled()
    # The buttons are only a hint: the server refuses the request itself.
    status = page.evaluate(
        """async (ref) => (await fetch('/api/dlq/replay', {method: 'POST',
             headers: {'Content-Type': 'application/json', 'X-CSRF-Token': 'guess'},
             body: JSON.stringify({refs: [ref]})})).status""",
        ref,
    )
    assert status == 403
    assert r.xlen(corec_streams["dead_letter_stream"]) == 1


def test_delete_asks_first(
    page: Page, console: Console, r: syncredis.Redis, corec_streams: dict[str, Any]
) -> None:
    fields = {"payload": orjson.dumps({"action": "echo", "params": {}, "id": "d1"}),
              "error": orjson.dumps({"type": "handler_error", "message": "no"}),
              "deliveries": "1"}  # fmt: skip
    r.xadd(corec_streams["dead_letter_stream"], fields)
    sign_in(page, console, "/dead-letters")
    page.locator('input[name="ref"]').first.check()
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("#delete-selected").click()
    page.wait_for_timeout(500)
    assert r.xlen(corec_streams["dead_letter_stream"]) == 1
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#delete-selected").click()
    expect(page.locator("#dlq-outcome")).to_contain_text("deleted 1")
    assert r.xlen(corec_streams["dead_letter_stream"]) == 0
