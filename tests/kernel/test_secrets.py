"""Secrets are never printed: URL passwords are redacted in every message, report and log line.

Unit tests of :mod:`corec_plugin_kit.redaction` over many URL forms (and hypothesis over
arbitrary passwords), the logging filter, the config's URL validation (malformed URLs are config
errors, exit 3, without echoing the URL), and the real ``corec-kit`` console script: ``check``,
``check --json``, ``history``, ``run``, ``exec stats`` and ``send`` with a distinctive password in
the userinfo or in ``?password=`` of the Redis URL or of the database URL.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from shared_helpers import free_port

from corec_plugin_kit.config import KernelConfig, load_settings
from corec_plugin_kit.errors import DatabaseUnavailable, error_from_exception
from corec_plugin_kit.redaction import (
    RedactingFilter,
    install_log_redaction,
    redact,
    redact_data,
    redact_url,
)

Kit = Callable[..., Any]
SECRET = "Hunter2-S3cr3t-Zq9"


# --------------------------------------------------------------------------- redact()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://user:hunter2@host:6380/1", "rediss://user:***@host:6380/1"),
        ("redis://host:6379/0?password=hunter2", "redis://host:6379/0?password=***"),
        ("unix://:hunter2@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        (
            "unix:///run/redis.sock?db=0&password=hunter2",
            "unix:///run/redis.sock?db=0&password=***",
        ),
        ("postgresql://u:hunter2@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("postgres://u:hunter2@db/x", "postgres://u:***@db/x"),
        ("postgresql+asyncpg://u:hunter2@db/x", "postgresql+asyncpg://u:***@db/x"),
        (
            "postgresql://u@127.0.0.1:5432/test?password=hunter2",
            "postgresql://u@127.0.0.1:5432/test?password=***",
        ),
        (
            "postgresql://u@h/db?search_path=s&PassWord=hunter2&sslmode=require",
            "postgresql://u@h/db?search_path=s&PassWord=***&sslmode=require",
        ),
        (
            "postgresql://u@h/db?sslpassword=a&pwd=b&passwd=c&pass=d&secret=e&token=f&auth=g"
            "&access_token=h&api_key=i",
            "postgresql://u@h/db?sslpassword=***&pwd=***&passwd=***&pass=***&secret=***&token=***"
            "&auth=***&access_token=***&api_key=***",
        ),
        ("postgresql://u:p%40ss%3Aw%2Fd@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p@ss:w/d@h:5432/db", "postgresql://u:***@h:5432/db"),  # raw @ : /
        (
            "postgresql://h1:5432,h2:5433/db?password=x",
            "postgresql://h1:5432,h2:5433/db?password=***",
        ),
        ("https://user:tok@example.com/path", "https://user:***@example.com/path"),
        ("amqp://guest:guest@rabbit:5672/", "amqp://guest:***@rabbit:5672/"),
        # Nothing to hide: left exactly as it was.
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user@host/0", "redis://user@host/0"),
        ("sqlite:///data/a@b:c.db", "sqlite:///data/a@b:c.db"),
        ("sqlite:////abs/records.db", "sqlite:////abs/records.db"),
        (
            "postgresql://127.0.0.1:5432/test?application_name=me@host",
            "postgresql://127.0.0.1:5432/test?application_name=me@host",
        ),
        ("postgresql://u@h/db?password=", "postgresql://u@h/db?password="),
    ],
)
def test_redact_url_forms(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact(url) == shown
    assert redact(shown) == shown  # idempotent
    assert redact(f"at {url} refused") == f"at {shown} refused"


def test_redact_finds_every_url_in_free_text() -> None:
    text = (
        "writing records failed (DatabaseUnavailable: PostgreSQL at "
        "'postgresql://corec:hunter2@db:5432/corec?sslpassword=kiwi' cannot be reached); "
        'redis="redis://:melon@cache:6379/0", plain words, a:b@c, no url here'
    )
    out = redact(text)
    for secret in ("hunter2", "kiwi", "melon"):
        assert secret not in out
    # A value runs to the URL's end: the closing quote goes with it (nothing of a password that
    # ends with a quote can show).
    assert "'postgresql://corec:***@db:5432/corec?sslpassword=*** cannot" in out
    assert 'redis://:***@cache:6379/0"' in out
    assert out.endswith("plain words, a:b@c, no url here")
    assert redact("no url: user:pw@host") == "no url: user:pw@host"


def test_redact_data_walks_json() -> None:
    data = {"detail": ["x redis://:hunter2@h:1/0"], "n": 3, "ok": True, "none": None}
    assert redact_data(data) == {
        "detail": ["x redis://:***@h:1/0"],
        "n": 3,
        "ok": True,
        "none": None,
    }


# Arbitrary printable passwords (no whitespace: a URL in text ends at whitespace, and a driver
# reads a space in a URL only percent-encoded). Raw in the userinfo they may hold @ : / % and
# every other sign except ? and # (which end the authority of any URL); raw in the query every
# sign except &. Percent-encoded, anything printable at all.
PRINTABLE = st.text(alphabet=st.sampled_from(string.printable), min_size=1, max_size=40)
NO_SPACE = st.text(
    alphabet=st.sampled_from([c for c in string.printable if not c.isspace()]),
    min_size=1,
    max_size=40,
)
HOSTS = [
    ("redis", "127.0.0.1:6379", "/0"),
    ("rediss", "cache.example.com:6380", "/2"),
    ("postgresql", "127.0.0.1:5432", "/test"),
    ("postgres", "db:5433", "/corec"),
    ("postgresql+asyncpg", "[::1]:5432", "/corec"),
    ("unix", "", "/run/redis.sock"),
]


def forms(password: str, encoded: bool) -> list[tuple[str, str]]:
    """(url, part that must still show) for each scheme, the password in userinfo and query."""
    pw = quote(password, safe="") if encoded else password
    out = []
    for scheme, host, path in HOSTS:
        if encoded or not set(password) & set("?#"):
            out.append((f"{scheme}://corec:{pw}@{host}{path}", f"{host}{path}"))
            out.append((f"{scheme}://:{pw}@{host}{path}?db=0", f"{host}{path}?db=0"))
        if encoded or "&" not in password:
            out.append((f"{scheme}://corec@{host}{path}?password={pw}", f"@{host}{path}?password="))
            out.append(
                (f"{scheme}://{host}{path}?sslmode=require&Password={pw}&x=1", f"{host}{path}?")
            )
    return out


def assert_hidden(password: str, encoded: bool) -> None:
    secret = f"Zq7{password}Wm4"  # distinctive ends: a leak of either end is seen
    for url, visible in forms(secret, encoded):
        for text in (url, f"PostgreSQL at {url} cannot be reached: refused", f"'{url}'"):
            out = redact(text)
            assert "Zq7" not in out and "Wm4" not in out, (text, out)
            assert visible in out, (text, out)
            assert redact(out) == out
        assert "Zq7" not in redact_url(url) and visible in redact_url(url)


@settings(max_examples=300, deadline=None)
@given(NO_SPACE)
@example("p@ss:w/rd")
@example("%40%3A%2F")
@example("a@b@c")
@example("***x")
def test_any_raw_password_is_hidden(password: str) -> None:
    assert_hidden(password, encoded=False)


@settings(max_examples=300, deadline=None)
@given(PRINTABLE)
@example("p@ss:w/rd?x#y&z=1 %20")
def test_any_percent_encoded_password_is_hidden(password: str) -> None:
    assert_hidden(password, encoded=True)


# --------------------------------------------------------------------------- errors and logs


def test_every_corec_error_message_is_redacted() -> None:
    url = f"postgresql://u:{SECRET}@db:5432/x?password={SECRET}"
    error = DatabaseUnavailable(f"PostgreSQL at {url} cannot be reached")
    assert SECRET not in error.message and SECRET not in str(error)
    assert "db:5432" in error.message
    assert SECRET not in json.dumps(error.to_wire())
    unexpected = error_from_exception(OSError(f"cannot open redis://:{SECRET}@h:6379/0"))
    assert SECRET not in unexpected.message and "redis://:***@h:6379/0" in unexpected.message


def test_the_log_filter_redacts_message_args_and_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from corec_plugin_kit.runtime import worker

    install_log_redaction()  # as run_worker does, once the worker module is imported
    log = worker.log  # the worker's own logger (its module is not edited for this)
    url = f"postgresql://corec:{SECRET}@127.0.0.1:1/test"
    caplog.set_level(logging.DEBUG)
    try:
        raise OSError(f"connect {url}?password={SECRET}")
    except Exception as exc:
        log.warning("%s failed (%s: %s); retrying", "writing records", type(exc).__name__, exc)
        log.exception("worker failed at %s", url)
    # A logger made after the filter was installed: installing again (as the runtime does
    # once the worker is imported) covers it.
    late = logging.getLogger("corec_plugin_kit.some.late.module")
    install_log_redaction()
    late.error("dsn=%s", url)
    assert SECRET not in caplog.text
    assert caplog.text.count("127.0.0.1:1/test") >= 3
    assert "Traceback" in caplog.text
    assert all(r.getMessage() == redact(r.getMessage()) for r in caplog.records)


def test_the_filter_on_a_handler_covers_other_libraries() -> None:
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    other = logging.getLogger("some_library")
    other.addHandler(handler)
    try:
        other.warning("connecting to %s", f"redis://:{SECRET}@h:6379/0")
    finally:
        other.removeHandler(handler)
    assert SECRET not in stream.getvalue()
    assert "redis://:***@h:6379/0" in stream.getvalue()


# --------------------------------------------------------------------------- config (9a, 9b)


@pytest.mark.parametrize(
    ("key", "url", "says"),
    [
        ("redis_url", "http://nope", "must start with redis://"),
        ("redis_url", f"http://:{SECRET}@nope:80/", "must start with redis://"),
        ("redis_url", f"redis://:{SECRET}@127.0.0.1:abc/0", "port is not a number"),
        ("redis_url", f"redis://:{SECRET}@127.0.0.1:99999/0", "port is not a number"),
        ("redis_url", f"redis://:{SECRET}@/0", "names no host"),
        ("redis_url", "redis://127.0.0.1:6379/zero", "database after the host must be a number"),
        ("redis_url", "unix://", "names no socket file"),
        ("redis_url", "127.0.0.1:6379", "not a URL"),
        ("redis_url", f"redis://:{SECRET}/x@h:6379/0", "percent-encode"),
        ("database_url", f"postgresql://u:{SECRET}@127.0.0.1:abc/test", "port is not a number"),
        ("database_url", "postgresql://u@127.0.0.1:abc/test", "port is not a number"),
        ("database_url", f"postgresql://u:{SECRET}@/test", "names no host"),
        ("database_url", f"mysql://u:{SECRET}@h/db", "accepted: sqlite:///"),
        ("database_url", "sqlite:///", "names no file"),
        ("database_url", "/path/records.db", "not a URL"),
    ],
)
def test_malformed_urls_are_config_problems_without_the_url(key: str, url: str, says: str) -> None:
    problems = load_settings(environ={f"COREC_{key.upper()}": url}).problems
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"kernel.{key}: ")
    assert says in problems[0]
    assert SECRET not in problems[0]
    assert "Value error" not in problems[0]


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("redis_url", "redis://127.0.0.1:6379/0"),
        ("redis_url", "REDIS://h"),
        ("redis_url", "rediss://u:p%2Fw@h:6380/3?ssl_cert_reqs=none"),
        ("redis_url", "redis://[::1]:6379"),
        ("redis_url", "unix:///run/redis.sock?db=1&password=x"),
        ("database_url", "postgresql://u:pw@db/x?search_path=s"),
        ("database_url", "postgresql://h1:5432,h2:5433/db"),
        ("database_url", "postgresql://u@/db?host=/run/postgresql"),
        ("database_url", "postgresql+asyncpg://u@127.0.0.1:5432/test?password=x"),
        ("database_url", "sqlite:///relative/records.db"),
        ("database_url", "sqlite:////abs/records.db"),
    ],
)
def test_well_formed_urls_pass_unchanged(key: str, url: str) -> None:
    config = KernelConfig.model_validate({key: f"  {url} "})
    value = getattr(config, key)
    assert value is not None and value.get_secret_value() == url


# --------------------------------------------------------------------------- the real CLI


def userinfo_url(scheme: str, host_port: str, path: str) -> str:
    return f"{scheme}://corec:{SECRET}@{host_port}{path}"


def query_url(scheme: str, host_port: str, path: str) -> str:
    return f"{scheme}://corec@{host_port}{path}?password={SECRET}"


PLACES = {"userinfo": userinfo_url, "query": query_url}


def streams(tmp_path: Any) -> dict[str, str]:
    tag = tmp_path.name[-12:].replace("-", "_")
    return {
        "COREC_KERNEL__STREAM_IN": f"secrets{tag}:in",
        "COREC_KERNEL__STREAM_OUT": f"secrets{tag}:out",
        "COREC_KERNEL__DEAD_LETTER_STREAM": f"secrets{tag}:dead",
        "COREC_KERNEL__GROUP": f"secrets{tag}",
    }


def assert_clean(run: Any, shown: str, code: int) -> None:
    both = run.stdout + run.stderr
    assert SECRET not in both, both
    assert run.returncode == code, both
    assert shown in both, both
    assert "Traceback" not in both


@pytest.mark.parametrize("place", sorted(PLACES))
def test_cli_never_prints_the_redis_password(
    kit: Kit, tmp_path: Any, place: str, corec_redis_url: str
) -> None:
    port = free_port()
    down = PLACES[place]("redis", f"127.0.0.1:{port}", "/0")
    env = {"COREC_REDIS_URL": down, "COREC_KERNEL__RECORDS": "false", **streams(tmp_path)}
    where = f"127.0.0.1:{port}"
    assert_clean(kit("check", env=env), where, 5)
    report = kit("check", "--json", env=env)
    assert_clean(report, where, 5)
    assert report.json()["redis"]["ok"] is False
    assert_clean(kit("run", "--burst", env=env), where, 5)
    assert_clean(kit("exec", "stats", env=env), where, 1)
    assert_clean(kit("send", "ping", env=env), where, 5)
    debug = kit("--debug", "send", "ping", env=env)
    assert debug.returncode == 5 and "Traceback (most recent call last)" in debug.stderr
    assert SECRET not in debug.stdout + debug.stderr and where in debug.stderr
    # A Redis that answers: the URL is shown (host and port) with its password redacted. The
    # test server has no password: AUTH fails, and the message still hides it.
    up = PLACES[place]("redis", corec_redis_url.split("://", 1)[1].split("/", 1)[0], "/0")
    answered = kit("check", env={**env, "COREC_REDIS_URL": up})
    assert SECRET not in answered.stdout + answered.stderr


@pytest.mark.postgres
@pytest.mark.parametrize("place", sorted(PLACES))
def test_cli_never_prints_the_database_password(
    kit: Kit, tmp_path: Any, place: str, corec_redis_url: str, corec_postgres_schema_url: str
) -> None:
    port = free_port()
    down = PLACES[place]("postgresql", f"127.0.0.1:{port}", "/test")
    env = {"COREC_REDIS_URL": corec_redis_url, "COREC_DATABASE_URL": down, **streams(tmp_path)}
    where = f"127.0.0.1:{port}"
    assert_clean(kit("check", env=env), where, 6)
    report = kit("check", "--json", env=env)
    assert_clean(report, where, 6)
    assert report.json()["database"]["ok"] is False
    assert_clean(kit("history", env=env), where, 6)
    assert_clean(kit("history", "--json", env=env), where, 6)
    assert_clean(kit("run", "--burst", env=env), where, 6)
    assert_clean(kit("exec", "stats", env=env), where, 1)
    debug = kit("--debug", "history", env=env)
    assert SECRET not in debug.stdout + debug.stderr
    assert "Traceback (most recent call last)" in debug.stderr and where in debug.stderr
    assert debug.returncode == 6
    # The test server trusts every connection, so a password is accepted and ignored: check,
    # history and stats succeed and show where the records are without the password.
    # A fresh schema of the test database, the password added to its URL.
    schema_url = corec_postgres_schema_url
    user, rest = schema_url.split("://", 1)[1].split("@", 1)
    host = rest.split("/", 1)[0]
    up_url = (
        schema_url.replace(f"{user}@", f"{user}:{SECRET}@", 1)
        if place == "userinfo"
        else f"{schema_url}&password={SECRET}"
    )
    up = {**env, "COREC_DATABASE_URL": up_url}
    assert_clean(kit("check", env=up), f"{host}/test", 0)
    assert_clean(kit("exec", "stats", env=up), '"status": "ok"', 0)
    assert_clean(kit("history", env=up), f"{host}/test", 0)


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("COREC_REDIS_URL", "http://127.0.0.1:6379/0"),
        ("COREC_REDIS_URL", f"redis://:{SECRET}@127.0.0.1:abc/0"),
        ("COREC_REDIS_URL", f"redis://:{SECRET}@/0"),
        ("COREC_DATABASE_URL", "postgresql://u@127.0.0.1:abc/test"),
        ("COREC_DATABASE_URL", f"postgresql://u:{SECRET}@127.0.0.1:abc/test?password={SECRET}"),
        ("COREC_DATABASE_URL", f"mysql://u:{SECRET}@127.0.0.1/test"),
    ],
)
def test_malformed_urls_exit_3_from_every_command(kit: Kit, key: str, url: str) -> None:
    env = {key: url, "COREC_KERNEL__RECORDS": "true"}
    for args in (["check"], ["check", "--json"], ["run", "--burst"], ["send", "ping"], ["history"]):
        run = kit(*args, env=env)
        both = run.stdout + run.stderr
        assert run.returncode == 3, (args, both)
        assert SECRET not in both
        assert "Traceback" not in both and "Internal error" not in both
        assert f"kernel.{key[len('COREC_') :].lower()}" in both
