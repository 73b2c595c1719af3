"""CoreC and codex config: a plugin section (PLUGINS_GUIDE.md's flat ``PluginConfig``, codex's
``{"codex": {...}}``) or codex's own ``config.json`` mapped onto ``kernel`` and ``generator``.

Upstream (mixycronico/Lunareth): ``plugins/PLUGINS_GUIDE.md`` section 3 (``PluginConfig``:
``stream_in``, ``stream_out``, ``templates_dir``, ``output_plugins``, ``output_websites``,
``metrics_port``, ``exclude_patterns``, ``circuit_breaker``), ``plugins/codex/config.json`` (the
section ``codex``), ``plugins/codex/main.py`` (``CodexPlugin.__init__`` reads
``config["codex"]``), ``processors/manager.py`` (``CodexManager.__init__`` reads ``stream_in``,
``stream_out``, ``metrics_port`` from that section), ``config/corec_config.json`` (a plugin's
section holds CoreC's own ``enabled``, ``path``, ``bloque``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from corec_plugin_kit import ConfigError
from corec_plugin_kit.config import (
    KernelConfig,
    from_corec_section,
    is_corec_file,
    load_settings,
    raise_problems,
)

# plugins/codex/config.json, as upstream ships it (data, not code).
CODEX_CONFIG: dict[str, Any] = {
    "codex": {
        "templates_dir": "plugins/codex/templates",
        "output_plugins": "plugins/",
        "output_websites": "generated_websites/",
        "exclude_patterns": ["__pycache__/*", "*.pyc"],
        "circuit_breaker": {"max_failures": 3, "reset_timeout": 900},
    }
}

# PLUGINS_GUIDE.md's PluginConfig, every field, flat.
PLUGIN_CONFIG: dict[str, Any] = {
    "stream_in": "mi_plugin_in",
    "stream_out": "mi_plugin_out",
    "templates_dir": "tpl",
    "output_plugins": "out/plugins",
    "output_websites": "out/sites",
    "metrics_port": 8001,
    "exclude_patterns": ["*.pyc"],
    "circuit_breaker": {"max_failures": 2, "reset_timeout": 60},
}


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("COREC_"):
            monkeypatch.delenv(name)
    return tmp_path


def write(tmp_path: Path, data: dict[str, Any], name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------- from_corec_section


def test_codex_section_maps_onto_kernel_and_generator() -> None:
    overrides, warnings = from_corec_section(CODEX_CONFIG)
    assert warnings == []
    assert overrides == {
        "kernel": {"circuit_breaker": {"max_failures": 3, "reset_timeout": 900}},
        "generator": {
            "templates_dir": "plugins/codex/templates",
            "output_plugins": "plugins/",
            "output_websites": "generated_websites/",
            "exclude_patterns": ["__pycache__/*", "*.pyc"],
        },
    }
    # The mapped kernel keys validate as kernel keys.
    kernel = KernelConfig.model_validate(overrides["kernel"])
    assert (kernel.circuit_breaker.max_failures, kernel.circuit_breaker.reset_timeout) == (3, 900)


def test_flat_plugin_config_maps_every_field() -> None:
    overrides, warnings = from_corec_section(PLUGIN_CONFIG)
    assert warnings == []
    assert overrides["kernel"] == {
        "stream_in": "mi_plugin_in",
        "stream_out": "mi_plugin_out",
        "metrics_port": 8001,
        "circuit_breaker": {"max_failures": 2, "reset_timeout": 60},
    }
    assert overrides["generator"] == {
        "templates_dir": "tpl",
        "output_plugins": "out/plugins",
        "output_websites": "out/sites",
        "exclude_patterns": ["*.pyc"],
    }


def test_corec_own_keys_are_ignored_without_a_warning() -> None:
    # config/corec_config.json: "plugins": {"crypto_trading": {"enabled", "path", "bloque"}}.
    section = {
        "enabled": True,
        "path": "plugins/codex/config.json",
        "bloque": {"bloque_id": "codex_block", "canal": 3},
        "codex": {"output_plugins": "p", "enabled": True},
    }
    overrides, warnings = from_corec_section(section)
    assert overrides == {"generator": {"output_plugins": "p"}}
    assert warnings == []
    assert from_corec_section({"enabled": False}) == ({}, [])


def test_other_keys_are_warnings_with_their_path() -> None:
    section = {"stream_inn": "x", "codex": {"output_plugin": "p", "metrics_port": 9}}
    overrides, warnings = from_corec_section(section, where="plugins.codex.")
    assert overrides == {"kernel": {"metrics_port": 9}}
    assert len(warnings) == 2
    assert warnings[0].startswith("plugins.codex.stream_inn: not a key")
    assert warnings[1].startswith("plugins.codex.codex.output_plugin: not a key")
    assert all("ignored" in w and "output_plugins" in w for w in warnings)
    _, bad = from_corec_section({"codex": "yes"})
    assert bad == ["codex: must be an object of codex settings; ignored"]


def test_keep_leaves_the_callers_keys_alone() -> None:
    # The CoreC adapter handles config_file, strict, kernel and processor sections itself.
    section = {"config_file": "c.json", "kernel": {"records": False}, "strict": True, "foo": 1}
    overrides, warnings = from_corec_section(section, keep=("config_file", "kernel", "strict"))
    assert overrides == {}
    assert [w.split(":")[0] for w in warnings] == ["foo"]


def test_codex_keys_win_over_flat_ones_and_the_input_is_not_shared() -> None:
    breaker = {"max_failures": 1, "reset_timeout": 1}
    section = {"metrics_port": 1, "circuit_breaker": breaker, "codex": {"metrics_port": 2}}
    overrides, _ = from_corec_section(section)
    assert overrides["kernel"]["metrics_port"] == 2
    overrides["kernel"]["circuit_breaker"]["max_failures"] = 99
    assert breaker["max_failures"] == 1


def test_which_files_are_codex_style() -> None:
    assert is_corec_file(CODEX_CONFIG)
    assert is_corec_file({"stream_in": "x"})
    assert not is_corec_file({"kernel": {"stream_in": "x"}, "generator": {}})
    assert not is_corec_file({})


# --------------------------------------------------------------------------- --config FILE


def test_codex_config_json_given_to_config(tmp_path: Path) -> None:
    from corec_generator.processor import GeneratorConfig

    settings = load_settings(write(tmp_path, CODEX_CONFIG))
    assert settings.problems == [] and settings.warnings == []
    breaker = settings.kernel.circuit_breaker
    assert (breaker.max_failures, breaker.reset_timeout) == (3, 900)
    assert "codex" not in settings.raw_sections
    problems = settings.validate_processors({"generator": GeneratorConfig})
    assert problems == []
    generator = settings.processors["generator"]
    assert isinstance(generator, GeneratorConfig)
    assert generator.output_plugins == Path("plugins/")
    assert generator.output_websites == Path("generated_websites/")
    assert generator.exclude_patterns == ["__pycache__/*", "*.pyc"]
    # codex's own stream names are the defaults: nothing to map.
    assert (settings.kernel.stream_in, settings.kernel.stream_out) == (
        "corec_commands",
        "corec_responses",
    )


def test_flat_plugin_config_at_the_top_of_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {**PLUGIN_CONFIG, "enabled": True}))
    assert settings.warnings == []
    assert settings.kernel.stream_in == "mi_plugin_in"
    assert settings.kernel.stream_out == "mi_plugin_out"
    assert settings.kernel.metrics_port == 8001
    assert settings.raw_sections["generator"]["output_plugins"] == "out/plugins"
    assert "enabled" not in settings.raw_sections and "stream_in" not in settings.raw_sections


def test_the_files_own_sections_and_the_environment_win(tmp_path: Path) -> None:
    data = {
        **CODEX_CONFIG,
        "kernel": {"circuit_breaker": {"max_failures": 7}},
        "generator": {"output_plugins": "mine"},
        "reviser": {"root": "."},
    }
    settings = load_settings(
        write(tmp_path, data), environ={"COREC_GENERATOR__OUTPUT_WEBSITES": "env_sites"}
    )
    assert settings.kernel.circuit_breaker.max_failures == 7
    assert settings.kernel.circuit_breaker.reset_timeout == 900  # merged, not replaced
    generator = settings.raw_sections["generator"]
    assert generator["output_plugins"] == "mine"
    assert generator["output_websites"] == "env_sites"
    assert generator["templates_dir"] == "plugins/codex/templates"
    assert settings.raw_sections["reviser"] == {"root": "."}


def test_mapped_values_are_validated_as_kernel_keys(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {"codex": {"metrics_port": -1}}))
    assert len(settings.problems) == 1
    assert settings.problems[0].startswith("kernel.metrics_port:")


def test_unknown_keys_warn_and_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = {"codex": {**CODEX_CONFIG["codex"], "modelo": "gpt"}, "stream_outt": "x"}
    with caplog.at_level(logging.WARNING, logger="corec_plugin_kit.config"):
        settings = load_settings(write(tmp_path, data))
    assert settings.problems == []
    assert [w.split(":")[0] for w in settings.warnings] == ["stream_outt", "codex.modelo"]
    assert sum("codex.modelo" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    "how",
    ["kernel_key", "env_flag", "env_key"],
)
def test_strict_makes_the_warnings_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    data: dict[str, Any] = {"codex": {"modelo": "gpt"}}
    if how == "kernel_key":
        data["kernel"] = {"strict_processors": True}
    elif how == "env_flag":
        monkeypatch.setenv("COREC_STRICT_PROCESSORS", "1")
    else:
        monkeypatch.setenv("COREC_KERNEL__STRICT_PROCESSORS", "true")
    settings = load_settings(write(tmp_path, data))
    assert settings.warnings == []
    assert [p.split(":")[0] for p in settings.problems] == ["codex.modelo"]


def test_a_kit_file_is_read_as_before(tmp_path: Path) -> None:
    data = {"kernel": {"metrics_port": 0}, "generator": {"output_plugins": "p"}, "other": {"x": 1}}
    settings = load_settings(write(tmp_path, data))
    assert settings.warnings == [] and settings.problems == []
    assert settings.raw_sections == {"generator": {"output_plugins": "p"}, "other": {"x": 1}}


def test_the_old_stream_names_stay_usable(tmp_path: Path) -> None:
    old = {"stream_in": "corec:commands", "stream_out": "corec:results"}
    settings = load_settings(
        write(tmp_path, {"kernel": {**old, "dead_letter_stream": "corec:dead"}})
    )
    assert settings.kernel.stream_in == "corec:commands"
    assert settings.kernel.stream_out == "corec:results"
    assert settings.kernel.dead_letter_stream == "corec:dead"
    defaults = KernelConfig()
    assert (defaults.stream_in, defaults.stream_out, defaults.dead_letter_stream) == (
        "corec_commands",
        "corec_responses",
        "corec_dead_letters",
    )


# --------------------------------------------------------------------------- corec-kit check


def test_check_shows_the_warnings_and_strict_fails(corec_cli: Any, tmp_path: Path) -> None:
    data = {"codex": {**CODEX_CONFIG["codex"], "modelo": "gpt"}}
    path = str(write(tmp_path, data))
    # codex's templates_dir, as in a CoreC tree (a missing one would be a warning of its own).
    (tmp_path / CODEX_CONFIG["codex"]["templates_dir"] / "plugin").mkdir(parents=True)
    env = {"COREC_REDIS_URL": "redis://127.0.0.1:1/0", "COREC_KERNEL__RECORDS": "false"}
    text = corec_cli("--config", path, "check", env=env)
    assert text.exit_code == 5  # Redis is down on purpose: the config line is what matters
    line = next(ln for ln in text.output.splitlines() if " config:" in ln)
    assert line.startswith("[ok ] config: valid") and "1 warning(s): codex.modelo" in line
    report = json.loads(corec_cli("--config", path, "check", "--json", env=env).output)
    assert report["config"]["ok"] is True
    assert [w.split(":")[0] for w in report["config"]["warnings"]] == ["codex.modelo"]
    strict = corec_cli("--config", path, "--strict", "check", env=env)
    assert strict.exit_code == 3
    assert "codex.modelo" in strict.output
    clean = corec_cli("--config", str(write(tmp_path, CODEX_CONFIG, "c.json")), "check", env=env)
    assert "warning(s)" not in clean.output and "[ok ] config: valid" in clean.output
    strict_settings = load_settings(path, overrides={"kernel": {"strict_processors": True}})
    with pytest.raises(ConfigError, match=r"codex\.modelo"):
        raise_problems(strict_settings.problems)
