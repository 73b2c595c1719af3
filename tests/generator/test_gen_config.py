"""The ``generator`` config section: ``config_warnings`` for folders that will not be used as
they seem (a missing ``templates_dir`` falls back to the bundled templates), directly and through
``corec-kit check`` (a warning; an error with ``--strict``), and ``exclude_patterns`` that are
not gitignore lines refused as config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from corec_generator.processor import GeneratorConfig
from pydantic import ValidationError

pytestmark = pytest.mark.timeout(180)


def test_config_warnings_for_templates_dir(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert GeneratorConfig(templates_dir=missing).config_warnings() == [
        f"templates_dir: {missing} does not exist; the bundled templates are used"
    ]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert GeneratorConfig(templates_dir=a_file).config_warnings() == [
        f"templates_dir: {a_file} is not a folder; the bundled templates are used"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "plugins").mkdir()  # a near miss is still none of the template sets
    (empty / "react_app").write_text("a file, not a set")
    (warning,) = GeneratorConfig(templates_dir=empty).config_warnings()
    assert warning.startswith(f"templates_dir: {empty} holds none of plugin/, corec_plugin/")
    assert warning.endswith("; the bundled templates are used")
    (empty / "fastapi_app").mkdir()  # one set is enough: the others come from the bundle
    assert GeneratorConfig(templates_dir=empty).config_warnings() == []
    assert GeneratorConfig().config_warnings() == []  # no templates_dir: nothing to say


def test_config_warnings_for_output_roots(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    config = GeneratorConfig(
        output_plugins=a_file,  # a file where the root should be
        output_websites=a_file / "below" / "sites",  # below a file: cannot be created
    )
    assert config.config_warnings() == [
        f"output_plugins: {a_file} is not a folder, so nothing can be written below {a_file}",
        f"output_websites: {a_file} is not a folder, so nothing can be written below "
        f"{a_file / 'below' / 'sites'}",
    ]
    # missing roots are fine: the first generation creates them
    fine = GeneratorConfig(output_plugins=tmp_path / "new" / "plugins", output_websites=tmp_path)
    assert fine.config_warnings() == []


def test_exclude_patterns_must_be_gitignore_lines() -> None:
    assert GeneratorConfig(exclude_patterns=["*.md", "!README.md", "tests/"]).exclude_patterns
    with pytest.raises(ValidationError) as info:
        GeneratorConfig(exclude_patterns=["*.md", "[z-a]"])
    (error,) = info.value.errors()
    assert error["loc"] == ("exclude_patterns",) and "[z-a]" in error["msg"]


def test_check_warns_about_a_missing_templates_dir(kit: Any, tmp_path: Path) -> None:
    """``corec-kit check``: the warning names the key, exit 0; with --strict, exit 3."""
    missing = tmp_path / "no-such-templates"
    config = tmp_path / "corec.json"
    config.write_text(json.dumps({"generator": {"templates_dir": str(missing)}}))
    checked = kit("check", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"generator.templates_dir: {missing} does not exist" in checked.stdout
    strict = kit("--strict", "check", str(config))
    assert strict.returncode == 3, strict.stdout + strict.stderr
    assert "generator.templates_dir" in strict.stdout
    config.write_text(json.dumps({"generator": {"exclude_patterns": ["[z-a]"]}}))
    invalid = kit("check", str(config))
    assert invalid.returncode == 3, invalid.stdout + invalid.stderr
    assert "generator.exclude_patterns" in invalid.stdout
