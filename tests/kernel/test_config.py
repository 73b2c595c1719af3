"""Configuration: JSON and TOML files, where they come from, env overrides, every error at once."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from kernel_procs import processor
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from corec_plugin_kit import ConfigError
from corec_plugin_kit.config import KernelConfig, env_overrides, find_config, load_settings


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("COREC_"):
            monkeypatch.delenv(name)
    return tmp_path


class MineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: SecretStr = SecretStr("")
    retries: int = Field(2, ge=0)
    nested: dict[str, int] = Field(default_factory=dict)


def mine() -> type:
    def corec_config_model() -> type[BaseModel]:
        return MineConfig

    return processor(corec_config_model=corec_config_model)


def test_defaults_without_any_file() -> None:
    settings = load_settings()
    assert settings.source is None
    assert settings.kernel == KernelConfig()
    assert settings.kernel.stream_in == "corec_commands"
    assert settings.kernel.metrics_port == 8000
    assert settings.kernel.state_dir == Path(".corec")
    assert settings.kernel.circuit_breaker.max_failures == 5


def test_json_and_toml_files(isolated: Path) -> None:
    (isolated / "a.json").write_text(json.dumps({"kernel": {"group": "g1", "concurrency": 4}}))
    (isolated / "b.toml").write_text(
        '[kernel]\ngroup = "g2"\n[kernel.circuit_breaker]\nmax_failures = 9\n'
    )
    assert load_settings("a.json").kernel.group == "g1"
    toml = load_settings(isolated / "b.toml").kernel
    assert (toml.group, toml.circuit_breaker.max_failures) == ("g2", 9)


def test_where_the_file_comes_from(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_config() is None
    (isolated / "corec.toml").write_text('[kernel]\ngroup = "from-toml"\n')
    assert load_settings().kernel.group == "from-toml"
    (isolated / "corec.json").write_text('{"kernel": {"group": "from-cwd"}}')
    assert load_settings().kernel.group == "from-cwd"  # ./corec.json first
    (isolated / "env.json").write_text('{"kernel": {"group": "from-env"}}')
    monkeypatch.setenv("COREC_CONFIG", str(isolated / "env.json"))
    assert load_settings().kernel.group == "from-env"
    (isolated / "flag.json").write_text('{"kernel": {"group": "from-flag"}}')
    assert load_settings("flag.json").kernel.group == "from-flag"  # --config wins


def test_environment_overrides(isolated: Path) -> None:
    (isolated / "corec.json").write_text(
        json.dumps({"kernel": {"metrics_port": 9100, "circuit_breaker": {"reset_timeout": 7}}})
    )
    env = {
        "COREC_REDIS_URL": "redis://h:6379/0",
        "COREC_KERNEL__METRICS_PORT": "0",
        "COREC_KERNEL__CIRCUIT_BREAKER__MAX_FAILURES": "3",
        "COREC_KERNEL__GROUP": "7",
        "COREC_KERNEL__LOAD_PROCESSORS": "a,b",
        "COREC_MINE__RETRIES": "4",
        "COREC_STRICT_PROCESSORS": "1",  # a loader switch, not a key
        "COREC_UNRELATED": "x",  # not a kernel key: ignored
        "OTHER__X": "y",
    }
    settings = load_settings(environ=env)
    k = settings.kernel
    assert k.redis_url is not None
    assert k.redis_url.get_secret_value() == "redis://h:6379/0"
    assert k.metrics_port == 0
    assert k.circuit_breaker.max_failures == 3
    assert k.circuit_breaker.reset_timeout == 7  # the file's nested value is kept
    assert k.group == "7"
    assert k.load_processors == ["a", "b"]
    assert settings.raw_sections == {"mine": {"retries": 4}}


def test_env_overrides_shape() -> None:
    assert env_overrides({"COREC_KERNEL__CIRCUIT_BREAKER__MAX_FAILURES": "2"}) == {
        "kernel": {"circuit_breaker": {"max_failures": 2}}
    }
    assert env_overrides({"COREC_CONFIG": "x", "COREC_": "y", "PATH": "/bin"}) == {}


def test_nested_env_override_reaches_the_kernel(
    monkeypatch: pytest.MonkeyPatch, corec_processors: Any
) -> None:
    from corec_plugin_kit.kernel import Kernel

    monkeypatch.setenv("COREC_KERNEL__CIRCUIT_BREAKER__MAX_FAILURES", "11")
    kernel = Kernel.build(None, processors=corec_processors)
    assert kernel.settings.kernel.circuit_breaker.max_failures == 11


def test_every_problem_reported_at_once_with_key_paths(
    isolated: Path, corec_processors: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corec_plugin_kit.kernel import Kernel

    corec_processors.register(mine(), "mine")
    (isolated / "corec.json").write_text(
        json.dumps(
            {
                "kernel": {
                    "metrics_port": 70000,
                    "concurrency": 0,
                    "circuit_breaker": {"max_failures": 0},
                    "no_such_key": 1,
                },
                "mine": {"retries": -1, "nested": {"a": "x"}},
            }
        )
    )
    monkeypatch.setenv("COREC_KERNEL__BATCH_SIZE", "0")
    with pytest.raises(ConfigError) as caught:
        Kernel.build(None, processors=corec_processors)
    problems = caught.value.details
    keys = sorted(line.split(":")[0] for line in problems)
    assert keys == [
        "kernel.batch_size",
        "kernel.circuit_breaker.max_failures",
        "kernel.concurrency",
        "kernel.metrics_port",
        "kernel.no_such_key",
        "mine.nested.a",
        "mine.retries",
    ]
    assert caught.value.message.startswith("invalid configuration (7 problems): ")
    assert caught.value.exit_code == 3


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", "{", "is not valid JSON"),
        ("bad.toml", "[kernel", "is not valid TOML"),
        ("list.json", "[1]", "must hold an object of sections"),
        ("kernel.json", '{"kernel": 3}', "section `kernel` must be an object"),
        ("latin.json", b'{"kernel": {"group": "\xe9"}}', "is not UTF-8 text"),
    ],
)
def test_unreadable_files(isolated: Path, name: str, text: str | bytes, message: str) -> None:
    path = isolated / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path)


def test_missing_file_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"cannot read config nope\.json: .*--config"):
        load_settings("nope.json")


def test_secrets_never_printed(
    isolated: Path,
    corec_processors: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from corec_plugin_kit.kernel import Kernel

    secret = "postgresql://u:hunter2@db/x"
    corec_processors.register(mine(), "mine")
    (isolated / "corec.json").write_text(
        json.dumps(
            {
                "kernel": {"database_url": secret, "redis_url": "redis://:sw0rdfish@h"},
                "mine": {"api_key": "tok-hunter3", "retries": "many"},
            }
        )
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as caught:
        Kernel.build(None, processors=corec_processors)
    settings = load_settings()
    shown = " ".join(
        [
            str(caught.value),
            repr(caught.value.details),
            repr(settings.kernel),
            str(settings.kernel),
            settings.kernel.model_dump_json(),
            caplog.text,
            *capsys.readouterr(),
        ]
    )
    for leaked in ("hunter2", "sw0rdfish", "tok-hunter3"):
        assert leaked not in shown
    assert settings.kernel.database_url is not None
    assert settings.kernel.database_url.get_secret_value() == secret
    # A bad secret value is reported by path without echoing the input.
    (isolated / "corec.json").write_text(json.dumps({"kernel": {"redis_url": ["hunter4"]}}))
    problems = load_settings().problems
    assert problems == ["kernel.redis_url: Input should be a valid string"]


def test_processor_sections_validated_by_their_models(
    corec_processors: Any, isolated: Path
) -> None:
    from corec_plugin_kit.kernel import Kernel

    corec_processors.register(mine(), "mine")
    corec_processors.register(processor(), "plain")
    (isolated / "corec.json").write_text(json.dumps({"mine": {"retries": 5}, "plain": {"x": 1}}))
    kernel = Kernel.build(None, processors=corec_processors)
    config = kernel.processor_config("mine")
    assert isinstance(config, MineConfig)
    assert config.retries == 5
    assert kernel.processor_config("plain") is None


def test_kernel_split_helper() -> None:
    assert KernelConfig(disable_processors="a, b,,c").disable_processors == ["a", "b", "c"]  # type: ignore[arg-type]
    assert KernelConfig(consumer="me").consumer_name() == "me"
    assert "-" in KernelConfig().consumer_name()
