"""Rendering: every template with defaults and every option flipped, and the copier-like
features (answers file, dry run, skip_if_exists, conditional files, excludes, filters,
StrictUndefined, one cached environment per template set), through the action and the CLI."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from corec_generator.engine import (
    ANSWERS_FILE,
    TemplateSetError,
    clear_cache,
    template_set,
)
from corec_generator.globs import matches
from corec_generator.paths import camel, pascal, slug, snake

PLUGIN_DEFAULT = {
    ".corec-answers.json",
    ".gitignore",
    "CHANGELOG.md",
    "LICENSE",
    "README.md",
    "corec.example.json",
    "pyproject.toml",
    "tests/test_processor.py",
    "demo/__init__.py",
    "demo/processor.py",
    "demo/py.typed",
}


def files_of(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def check_python(root: Path) -> None:
    """Every generated .py parses and every .json/.toml loads: a broken render fails here."""
    for path in root.rglob("*"):
        if path.suffix == ".py":
            ast.parse(path.read_text(), filename=str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".toml":
            tomllib.loads(path.read_text())


async def test_plugin_defaults(gen_exec: Any, roots: dict[str, Path]) -> None:
    envelope = await gen_exec("generate_plugin", {"plugin_name": "demo"})
    assert envelope["status"] == "ok", envelope["error"]
    result = envelope["result"]
    project = roots["plugins"] / "demo"
    assert result["project_dir"] == str(project)
    assert files_of(project) == PLUGIN_DEFAULT
    assert result["created"] == len(PLUGIN_DEFAULT)
    check_python(project)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["corec.processors"] == {"demo": "demo.processor"}
    assert pyproject["project"]["license"] == "MIT"
    # Bounded to the kit's compatible minor, as the shipped processors are (CHANGELOG.md).
    from corec_plugin_kit import __version__ as kit_version

    major, minor = kit_version.split(".")[:2]
    assert (
        f"corec-plugin-kit>={major}.{minor},<{major}.{int(minor) + 1}"
        in (pyproject["project"]["dependencies"])
    )
    source = (project / "demo" / "processor.py").read_text()
    assert "def corec_cli" in source and "def corec_config_model" in source
    answers = json.loads((project / ANSWERS_FILE).read_text())
    assert answers["_template"] == "plugin"
    assert answers["answers"]["plugin_name"] == "demo"
    assert {"_kit_version", "_generator_version"} <= set(answers)


async def test_plugin_every_option_flipped(gen_exec: Any, roots: dict[str, Path]) -> None:
    hostile_text = 'He said "hi" \\ """; import os  # {{ x }}'
    envelope = await gen_exec(
        "generate_plugin",
        {
            "plugin_name": "Weather-Station",
            "description": hostile_text,
            "author": "Ada 'Quote' Lovelace",
            "output": "team/a",
            "with_cli": False,
            "with_config": False,
            "license": "none",
        },
    )
    assert envelope["status"] == "ok", envelope["error"]
    project = roots["plugins"] / "team" / "a" / "Weather-Station"
    files = files_of(project)
    assert "LICENSE" not in files and "corec.example.json" not in files
    assert "weather_station/processor.py" in files
    check_python(project)
    source = (project / "weather_station" / "processor.py").read_text()
    assert "corec_cli" not in source and "corec_config_model" not in source
    module = ast.parse(source)
    consts = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in module.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    assert consts["DESCRIPTION"] == hostile_text  # escaped, not injected
    assert consts["ACTION"] == "weather_station.hello"
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "corec-weather-station"
    assert pyproject["project"]["description"] == hostile_text
    assert "license" not in pyproject["project"]
    tests = (project / "tests" / "test_processor.py").read_text()
    assert "test_cli_group" not in tests and "test_config_section" not in tests


@pytest.mark.parametrize("license_", ["Apache-2.0"])
async def test_plugin_other_license(gen_exec: Any, roots: dict[str, Path], license_: str) -> None:
    envelope = await gen_exec("generate_plugin", {"plugin_name": "lic", "license": license_})
    assert envelope["status"] == "ok"
    assert "Apache License" in (roots["plugins"] / "lic" / "LICENSE").read_text()


async def test_fastapi_defaults_and_flipped(gen_exec: Any, roots: dict[str, Path]) -> None:
    envelope = await gen_exec("generate_website", {"template": "fastapi", "project_name": "shop"})
    assert envelope["status"] == "ok", envelope["error"]
    shop = roots["websites"] / "shop"
    assert files_of(shop) == {
        ".corec-answers.json",
        ".gitignore",
        "README.md",
        "pyproject.toml",
        "shop/__init__.py",
        "shop/main.py",
        "shop/py.typed",
        "tests/test_app.py",
    }
    check_python(shop)
    assert "CORSMiddleware" not in (shop / "shop" / "main.py").read_text()
    envelope = await gen_exec(
        "generate_website",
        {
            "template": "fastapi",
            "project_name": "Big-Shop",
            "description": "x",
            "author": "y",
            "with_tests": False,
            "with_docker": True,
            "with_cors": True,
        },
    )
    assert envelope["status"] == "ok", envelope["error"]
    big = roots["websites"] / "Big-Shop"
    files = files_of(big)
    assert "tests/test_app.py" not in files
    assert {"Dockerfile", ".dockerignore", "big_shop/main.py"} <= files
    assert "CORSMiddleware" in (big / "big_shop" / "main.py").read_text()
    assert "big_shop.main:app" in (big / "Dockerfile").read_text()
    check_python(big)
    # Never the kit's metrics port (kernel.metrics_port, 8000): both run side by side.
    for name in ("Dockerfile", "README.md"):
        text = (big / name).read_text()
        assert "8080" in text and "8000:" not in text and "port 8000" not in text, name
    assert '"--port", "8080"' in (big / "Dockerfile").read_text()


async def test_react_defaults_and_flipped(gen_exec: Any, roots: dict[str, Path]) -> None:
    envelope = await gen_exec("generate_website", {"template": "react", "project_name": "Web"})
    assert envelope["status"] == "ok", envelope["error"]
    web = roots["websites"] / "Web"
    assert files_of(web) == {
        ".corec-answers.json",
        ".gitignore",
        "README.md",
        "index.html",
        "package.json",
        "src/App.css",
        "src/App.jsx",
        "src/App.test.jsx",
        "src/main.jsx",
        "vite.config.js",
    }
    package = json.loads((web / "package.json").read_text())
    assert package["name"] == "web"
    assert package["scripts"]["test"] == "vitest run"
    assert "vitest" in package["devDependencies"]
    assert '<script type="module" src="/src/main.jsx">' in (web / "index.html").read_text()
    envelope = await gen_exec(
        "generate_website",
        {
            "template": "react",
            "project_name": "web2",
            "description": 'a "quoted" <b>site</b>',
            "with_tests": False,
            "with_docker": True,
        },
    )
    assert envelope["status"] == "ok", envelope["error"]
    web2 = roots["websites"] / "web2"
    files = files_of(web2)
    assert "src/App.test.jsx" not in files and "Dockerfile" in files
    package = json.loads((web2 / "package.json").read_text())
    assert "test" not in package["scripts"] and "vitest" not in package["devDependencies"]
    assert package["description"] == 'a "quoted" <b>site</b>'
    assert "&lt;b&gt;" in (web2 / "index.html").read_text()  # HTML-escaped in the page


async def test_dry_run_plans_and_writes_nothing(
    gen_exec: Any, roots: dict[str, Path], snapshot: Any
) -> None:
    before = snapshot(roots["plugins"])
    envelope = await gen_exec("generate_plugin", {"plugin_name": "demo", "dry_run": True})
    assert envelope["status"] == "ok"
    result = envelope["result"]
    assert result["dry_run"] is True
    assert {f["path"] for f in result["files"]} == PLUGIN_DEFAULT
    assert all(f["action"] == "create" for f in result["files"])
    assert snapshot(roots["plugins"]) == before
    # a dry run against a root that does not exist yet creates nothing either
    missing = roots["plugins"].parent / "nowhere"
    envelope = await gen_exec(
        "generate_plugin", {"plugin_name": "demo", "dry_run": True}, output_plugins=str(missing)
    )
    assert envelope["status"] == "ok"
    assert not missing.exists()


async def test_existing_files_refused_listed_then_forced(
    gen_exec: Any, roots: dict[str, Path]
) -> None:
    assert (await gen_exec("generate_plugin", {"plugin_name": "demo"}))["status"] == "ok"
    project = roots["plugins"] / "demo"
    (project / "README.md").write_text("mine")
    (project / "CHANGELOG.md").write_text("my changelog")
    envelope = await gen_exec("generate_plugin", {"plugin_name": "demo"})
    assert envelope["status"] == "error"
    locs = {d["loc"] for d in envelope["error"]["details"]}
    # every existing file is listed at once; CHANGELOG.md is skip_if_exists in the manifest
    assert locs == PLUGIN_DEFAULT - {"CHANGELOG.md"}
    assert (project / "README.md").read_text() == "mine"
    # dry run with force shows what would happen
    envelope = await gen_exec(
        "generate_plugin",
        {"plugin_name": "demo", "force": True, "dry_run": True, "skip_if_exists": ["README.*"]},
    )
    actions = {f["path"]: f["action"] for f in envelope["result"]["files"]}
    assert actions["README.md"] == "skip" and actions["CHANGELOG.md"] == "skip"
    assert actions["pyproject.toml"] == "overwrite"
    assert (project / "README.md").read_text() == "mine"
    envelope = await gen_exec(
        "generate_plugin", {"plugin_name": "demo", "force": True, "skip_if_exists": ["README.*"]}
    )
    assert envelope["status"] == "ok"
    assert envelope["result"]["skipped"] == 2
    assert (project / "README.md").read_text() == "mine"
    assert (project / "CHANGELOG.md").read_text() == "my changelog"


async def test_exclude_patterns_from_config(gen_exec: Any, roots: dict[str, Path]) -> None:
    envelope = await gen_exec(
        "generate_plugin",
        {"plugin_name": "demo"},
        exclude_patterns=["CHANGELOG.md", "tests/**", "*.typed"],
    )
    assert envelope["status"] == "ok"
    assert files_of(roots["plugins"] / "demo") == PLUGIN_DEFAULT - {
        "CHANGELOG.md",
        "tests/test_processor.py",
        "demo/py.typed",
    }


async def test_answers_file_feeds_back(gen_exec: Any, roots: dict[str, Path]) -> None:
    params = {
        "plugin_name": "again",
        "description": "round trip",
        "with_cli": False,
        "license": "Apache-2.0",
    }
    assert (await gen_exec("generate_plugin", params))["status"] == "ok"
    first = roots["plugins"] / "again"
    answers = json.loads((first / ANSWERS_FILE).read_text())["answers"]
    envelope = await gen_exec("generate_plugin", {**answers, "output": "copy"})
    assert envelope["status"] == "ok", envelope["error"]
    second = roots["plugins"] / "copy" / "again"
    assert files_of(first) == files_of(second)
    for rel in files_of(first):
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


async def test_templates_dir_override_strict_undefined_and_filters(
    gen_exec: Any, roots: dict[str, Path], tmp_path: Path
) -> None:
    custom = tmp_path / "custom" / "plugin"
    (custom / "{{package}}").mkdir(parents=True)
    (custom / "template.json").write_text('{"conditional": {"only_cli.txt": "not with_cli"}}')
    (custom / "{{package}}" / "names.txt.jinja").write_text(
        "{{ plugin_name|snake }} {{ plugin_name|camel }} {{ plugin_name|pascal }} "
        "{{ plugin_name|slug }}\n"
    )
    (custom / "only_cli.txt").write_text("no cli\n")
    envelope = await gen_exec(
        "generate_plugin",
        {"plugin_name": "My-Fine_plugin", "with_cli": False},
        templates_dir=str(tmp_path / "custom"),
    )
    assert envelope["status"] == "ok", envelope["error"]
    project = roots["plugins"] / "My-Fine_plugin"
    assert (project / "my_fine_plugin" / "names.txt").read_text() == (
        "my_fine_plugin myFinePlugin MyFinePlugin my-fine-plugin\n"
    )
    assert (project / "only_cli.txt").read_text() == "no cli\n"
    # an undefined name is an error naming the file, and nothing is written
    (custom / "{{package}}" / "bad.txt.jinja").write_text("{{ no_such_answer }}\n")
    clear_cache()  # the set was cached with the old listing
    envelope = await gen_exec(
        "generate_plugin", {"plugin_name": "other"}, templates_dir=str(tmp_path / "custom")
    )
    assert envelope["status"] == "error"
    assert "bad.txt.jinja" in envelope["error"]["message"]
    assert "no_such_answer" in envelope["error"]["message"]
    assert not (roots["plugins"] / "other").exists()


async def test_templates_are_sandboxed(gen_exec: Any, tmp_path: Path) -> None:
    """A template cannot reach Python internals (no template-supplied code)."""
    custom = tmp_path / "evil" / "plugin"
    custom.mkdir(parents=True)
    (custom / "x.txt.jinja").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    clear_cache()
    envelope = await gen_exec(
        "generate_plugin", {"plugin_name": "evil"}, templates_dir=str(tmp_path / "evil")
    )
    assert envelope["status"] == "error"
    assert "unsafe" in envelope["error"]["message"]


def test_one_environment_per_template_set() -> None:
    first = template_set("plugin")
    again = template_set("plugin")
    assert first is again and first.env is again.env
    assert template_set("react_app").env is not first.env
    with pytest.raises(TemplateSetError):
        template_set("no_such_template_set")


def test_filters_and_globs() -> None:
    assert snake("MyPlugin-name") == "my_plugin_name"
    assert camel("my_plugin") == "myPlugin"
    assert pascal("my-plugin") == "MyPlugin"
    assert slug("My_Plugin") == "my-plugin"
    # gitignore rules (the whole table is in test_gen_globs.py)
    assert matches("a/b/c.pyc", ["*.pyc"])
    assert matches("tests/a/b.py", ["tests/**"])
    assert matches("tests/a/b.py", ["tests/*"])  # tests/a is matched, so all below it
    assert not matches("README.md.bak", ["README.md"])


# --------------------------------------------------------------------------- CLI


def test_cli_plugin_and_site_write_where_the_user_says(corec_cli: Any, tmp_path: Path) -> None:
    target = tmp_path / "anywhere" / "deep"
    result = corec_cli("generator", "plugin", "cli_made", "--output", str(target), "--without-cli")
    assert result.exit_code == 0, result.output
    assert (target / "cli_made" / "cli_made" / "processor.py").is_file()
    assert "wrote 11 file(s)" in result.output
    result = corec_cli("generator", "site", "fastapi", "api", "-o", str(target), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["template"] == "fastapi_app"
    result = corec_cli("generator", "site", "react", "web", "-o", str(target), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would write" in result.output
    assert not (target / "web").exists()


def test_cli_refuses_overwrite_and_reuses_answers(corec_cli: Any, tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    result = corec_cli("generator", "plugin", "p1", "-o", out, "--description", "first")
    assert result.exit_code == 0, result.output
    result = corec_cli("generator", "plugin", "p1", "-o", out)
    assert result.exit_code == 1
    assert "exists" in result.output and "force" in result.output
    answers = str(tmp_path / "o" / "p1" / ANSWERS_FILE)
    result = corec_cli("generator", "plugin", "--answers", answers, "-o", str(tmp_path / "o2"))
    assert result.exit_code == 0, result.output
    assert "first" in (tmp_path / "o2" / "p1" / "README.md").read_text()
    # regenerate in place, keeping a file the user edited
    (tmp_path / "o" / "p1" / "README.md").write_text("edited")
    (tmp_path / "o" / "p1" / "pyproject.toml").write_text("stale")
    result = corec_cli(
        "generator",
        "plugin",
        "--answers",
        answers,
        "-o",
        out,
        "--force",
        "--skip-if-exists",
        "README.md",
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "p1" / "README.md").read_text() == "edited"
    assert "corec-p1" in (tmp_path / "o" / "p1" / "pyproject.toml").read_text()
    result = corec_cli("generator", "site", "react", "--answers", answers, "-o", out)
    assert result.exit_code == 2
    assert "not 'react_app'" in result.output


def test_cli_reports_invalid_names(corec_cli: Any, tmp_path: Path) -> None:
    result = corec_cli("generator", "plugin", "../evil", "-o", str(tmp_path))
    assert result.exit_code == 2
    assert "plugin_name" in result.output
    assert list(tmp_path.iterdir()) == []


def test_exec_writes_only_below_configured_root(corec_cli: Any, tmp_path: Path) -> None:
    result = corec_cli(
        "exec",
        "generate_plugin",
        "-p",
        "plugin_name=from_exec",
        "-p",
        f"output={tmp_path / 'abs'}",
    )
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "abs").exists()
    result = corec_cli("exec", "generate_plugin", "-p", "plugin_name=from_exec", "-p", "output=x")
    assert result.exit_code == 0, result.output
    # corec_cli runs in tmp_path; the default root is ./plugins
    assert (tmp_path / "plugins" / "x" / "from_exec" / "pyproject.toml").is_file()


# --------------------------------------------------------------------------- docs


DOCS = Path(__file__).resolve().parents[2] / "docs" / "generator.md"


def test_docs_name_every_param_config_key_and_option(corec_cli: Any) -> None:
    """docs/generator.md never drifts from the models and the CLI."""
    from corec_generator.processor import (
        GeneratePluginParams,
        GenerateWebsiteParams,
        GeneratorConfig,
    )

    text = DOCS.read_text()
    for model in (GeneratePluginParams, GenerateWebsiteParams, GeneratorConfig):
        for name in model.model_fields:
            assert f"`{name}`" in text, f"docs/generator.md does not mention {name}"
    for command in (("plugin",), ("site",)):
        result = corec_cli("generator", *command, "--help")
        assert result.exit_code == 0, result.output
        options = set()
        for line in result.output.splitlines():
            stripped = line.strip()
            if stripped.startswith("-") and not stripped.startswith("-h, --help"):
                options |= {
                    opt for opt in stripped.split()[0:3] if opt.startswith("--") or opt == "-o,"
                }
        assert len(options) >= 10, options  # the parse above found the options
        for option in options:
            flag = option.rstrip(",").split("/")[0]
            assert flag in text, f"docs/generator.md does not mention {flag}"


def test_kit_requirement() -> None:
    from corec_generator.processor import kit_requirement

    assert kit_requirement("0.1.0") == "corec-plugin-kit>=0.1,<0.2"
    assert kit_requirement("0.12.3.dev1") == "corec-plugin-kit>=0.12,<0.13"
    assert kit_requirement("1.4.2") == "corec-plugin-kit>=1.4,<2"
