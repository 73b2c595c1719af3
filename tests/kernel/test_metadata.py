"""Package metadata of the kit and its three processor distributions (issue 13).

Read from the pyproject files (and, once per module, from wheels built by pip):

* the Python versions of the classifiers are those of ``requires-python``, of ``.ci/run`` and of
  tox, the same in every distribution, as are the status and operating system classifiers;
* each processor depends on the kit's compatible minor (``corec-plugin-kit>=0.1,<0.2`` while
  the kit is 0.1.x), says so in its README, and its README names its actions and commands;
* the project URLs agree on one repository; the changelog they point to exists;
* ``corec-kit --version`` lists the kit's version and each processor's.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from email.message import Message
from email.parser import Parser
from importlib import metadata
from pathlib import Path
from typing import Any
from zipfile import ZipFile

import click
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # the kit depends on tomli below 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
KIT = "corec-plugin-kit"
PROCESSORS = ("generator", "manager", "reviser")
URL_LABELS = {"Homepage", "Documentation", "Repository", "Issues", "Changelog"}
PYTHON = "Programming Language :: Python :: "


def pyproject(folder: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    return project


def processor_dir(name: str) -> Path:
    return ROOT / "processors" / name


def package_version(init: Path) -> Version:
    """``__version__`` of a package's ``__init__.py``, read as hatch reads it (the file)."""
    found = re.search(r'^__version__ = "([^"]+)"$', init.read_text(), flags=re.MULTILINE)
    assert found, f"no __version__ in {init}"
    return Version(found.group(1))


KIT_PROJECT = pyproject(ROOT)
KIT_VERSION = package_version(ROOT / "corec_plugin_kit" / "__init__.py")


def compatible_minor(version: Version) -> SpecifierSet:
    """``>=X.Y,<X.(Y+1)``: the kit's compatible minor while it is 0.x."""
    major, minor = version.major, version.minor
    return SpecifierSet(f">={major}.{minor},<{major}.{minor + 1}")


def python_versions(classifiers: list[str]) -> set[str]:
    """``{"3.10", ...}`` from the ``Programming Language :: Python :: 3.N`` classifiers."""
    return {c.removeprefix(PYTHON) for c in classifiers if re.fullmatch(r".*:: 3\.\d+", c)}


def by_prefix(classifiers: list[str], *prefixes: str) -> list[str]:
    return sorted(c for c in classifiers if c.startswith(prefixes))


def kit_requirement(project: dict[str, Any]) -> Requirement:
    found = [r for r in map(Requirement, project["dependencies"]) if r.name == KIT]
    assert len(found) == 1, f"{project['name']}: one dependency on {KIT}, found {found}"
    return found[0]


def ci_pythons() -> set[str]:
    """The Pythons ``.ci/run`` tests: its main job's (README's python3) and OTHER_PYTHONS."""
    script = (ROOT / ".ci" / "run").read_text()
    others = re.search(r'OTHER_PYTHONS="\$\{COREC_CI_OTHER_PYTHONS-([0-9. ]+)\}"', script)
    main = re.search(r"slow \(run on (3\.\d+) only\)", script)
    assert others and main, ".ci/run no longer names its Pythons the way this test reads them"
    return {main.group(1), *others.group(1).split()}


def tox_pythons() -> set[str]:
    env_list = re.search(r"^env_list = (.+)$", (ROOT / "tox.ini").read_text(), re.MULTILINE)
    assert env_list, "tox.ini has no env_list line"
    envs = re.findall(r"\bpy3(\d+)\b", env_list.group(1))
    return {f"3.{minor}" for minor in envs}


# --------------------------------------------------------------------------- classifiers


def test_kit_python_classifiers_match_requires_python_and_ci() -> None:
    declared = python_versions(KIT_PROJECT["classifiers"])
    assert declared == ci_pythons() == tox_pythons()
    assert declared == {"3.10", "3.11", "3.12", "3.13"}
    requires = SpecifierSet(KIT_PROJECT["requires-python"])
    oldest = min(declared, key=Version)
    below = Version(oldest).minor - 1
    assert all(requires.contains(v) for v in declared), requires
    assert not requires.contains(f"3.{below}"), f"requires-python admits 3.{below}: {requires}"


def test_kit_status_and_operating_systems() -> None:
    classifiers = KIT_PROJECT["classifiers"]
    assert len(by_prefix(classifiers, "Development Status ::")) == 1
    if KIT_VERSION.major == 0:
        assert by_prefix(classifiers, "Development Status :: 3", "Development Status :: 4")
    # The embedded server and uvloop are not installed on Windows (their markers): no Windows
    # and no "OS Independent".
    assert by_prefix(classifiers, "Operating System ::") == [
        "Operating System :: MacOS",
        "Operating System :: POSIX :: Linux",
    ]


@pytest.mark.parametrize("project", [KIT, *PROCESSORS])
def test_license_is_an_spdx_expression_without_a_classifier(project: str) -> None:
    meta = KIT_PROJECT if project == KIT else pyproject(processor_dir(project))
    assert meta["license"] == "MIT"
    assert by_prefix(meta["classifiers"], "License ::") == []


@pytest.mark.parametrize("name", PROCESSORS)
def test_processor_classifiers_match_the_kit(name: str) -> None:
    meta = pyproject(processor_dir(name))
    assert meta["requires-python"] == KIT_PROJECT["requires-python"]
    assert meta["description"]
    for prefix in (PYTHON, "Development Status ::", "Operating System ::"):
        assert by_prefix(meta["classifiers"], prefix) == by_prefix(
            KIT_PROJECT["classifiers"], prefix
        ), prefix
    assert "Framework :: AsyncIO" in meta["classifiers"]  # the handlers are coroutines


# --------------------------------------------------------------------------- the kit bound


@pytest.mark.parametrize("name", PROCESSORS)
def test_processor_depends_on_the_kits_compatible_minor(name: str) -> None:
    requirement = kit_requirement(pyproject(processor_dir(name)))
    assert requirement.specifier == compatible_minor(KIT_VERSION), requirement
    assert requirement.specifier.contains(KIT_VERSION, prereleases=True)
    assert requirement.marker is None and not requirement.extras


@pytest.mark.parametrize("name", PROCESSORS)
def test_processor_readme(name: str) -> None:
    """The README exists, states the bound the pyproject declares, names every action and
    every command the processor mounts under ``corec-kit NAME``."""
    meta = pyproject(processor_dir(name))
    assert meta["readme"] == "README.md"
    text = (processor_dir(name) / meta["readme"]).read_text()
    assert text.startswith(f"# {meta['name']}\n")
    major, minor = KIT_VERSION.major, KIT_VERSION.minor
    assert f"`{KIT}>={major}.{minor},<{major}.{minor + 1}`" in text

    module = importlib.import_module(f"corec_{name}.processor")
    actions: list[str] = []
    module.corec_register_actions(lambda action, *_args, **_kw: actions.append(action))
    missing = [a for a in actions if f"`{a}`" not in text]
    assert actions and not missing, f"README does not name the actions {missing}"

    group = click.Group(name)
    module.corec_cli(group)
    commands = list(command_paths(group, f"corec-kit {name}"))
    missing = [c for c in commands if c not in text]
    assert commands and not missing, f"README does not show {missing}"


def command_paths(group: click.Group, prefix: str) -> Iterator[str]:
    """``corec-kit NAME CMD [SUB]`` for each command of the group, subgroups walked."""
    for sub_name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from command_paths(command, f"{prefix} {sub_name}")
        else:
            yield f"{prefix} {sub_name}"


# --------------------------------------------------------------------------- URLs, changelog


def checkout_path(url: str) -> Path:
    """The file or folder of this checkout that a ``.../blob/main/X`` or ``/tree/main/X`` URL
    of the repository names; it must exist."""
    found = re.search(r"/(?:blob|tree)/main/(.+)$", url)
    assert found, f"{url} names no file of the repository"
    path = ROOT / found.group(1)
    assert path.exists(), f"{url}: {path.relative_to(ROOT)} does not exist"
    return path


def test_kit_urls_and_changelog() -> None:
    urls = KIT_PROJECT["urls"]
    assert set(urls) == URL_LABELS
    assert all(url.startswith("https://") for url in urls.values())
    repository = urls["Repository"]
    assert all(url.startswith(repository) for url in urls.values())
    assert checkout_path(urls["Changelog"]) == ROOT / "CHANGELOG.md"
    assert checkout_path(urls["Documentation"]) == ROOT / "docs"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "\n## [Unreleased]\n" in changelog


@pytest.mark.parametrize("name", PROCESSORS)
def test_processor_urls_share_the_kits_repository(name: str) -> None:
    urls = pyproject(processor_dir(name))["urls"]
    kit_urls = KIT_PROJECT["urls"]
    assert set(urls) == URL_LABELS
    for label in ("Repository", "Issues", "Changelog"):
        assert urls[label] == kit_urls[label], label
    assert all(
        url.startswith(kit_urls["Repository"] + "/")
        for url in (urls["Homepage"], urls["Documentation"])
    )
    assert checkout_path(urls["Homepage"]) == processor_dir(name)
    assert checkout_path(urls["Documentation"]).suffix == ".md"


# --------------------------------------------------------------------------- corec-kit --version


def test_version_lists_the_kit_and_each_processor(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COREC_", "_COREC"))}
    run = subprocess.run(
        [sys.executable, "-m", "corec_plugin_kit", "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    first, *rest = run.stdout.splitlines()
    assert first.startswith(f"corec-kit {KIT_VERSION} (corec-plugin-kit, Python ")
    for name in PROCESSORS:
        dist = pyproject(processor_dir(name))["name"]
        installed = metadata.version(dist)
        source = package_version(processor_dir(name) / f"corec_{name}" / "__init__.py")
        assert Version(installed) == source, f"{dist}: installed {installed}, checkout {source}"
        assert f"  {name}: {dist} {installed}" in rest, run.stdout


# --------------------------------------------------------------------------- built wheels


def build_wheels(out: Path) -> dict[str, Message]:
    """``{distribution: METADATA}`` of the kit's and the processors' wheels, built by pip in one
    run (about 15 s on the 2-core machine: one isolated hatchling per project)."""
    sources = [ROOT, *(processor_dir(name) for name in PROCESSORS)]
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out)]
    subprocess.run([*pip, *map(str, sources)], check=True, timeout=600)
    found: dict[str, Message] = {}
    for wheel in out.glob("*.whl"):
        with ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            message = Parser().parsestr(archive.read(name).decode())
        found[message["Name"]] = message
    return found


@pytest.mark.timeout(600)
def test_built_wheels_metadata(tmp_path: Path) -> None:
    """One test for the four wheels, so they are built once even with xdist."""
    built_all = build_wheels(tmp_path)
    folders = [ROOT, *(processor_dir(name) for name in PROCESSORS)]
    assert set(built_all) == {pyproject(folder)["name"] for folder in folders}
    for folder in folders:
        meta = pyproject(folder)
        built = built_all[meta["name"]]
        where = meta["name"]
        assert sorted(built.get_all("Classifier", [])) == sorted(meta["classifiers"]), where
        urls = dict(entry.split(", ", 1) for entry in built.get_all("Project-URL", []))
        assert urls == meta["urls"], where
        assert built["Requires-Python"] == meta["requires-python"], where
        assert built["License-Expression"] == meta["license"], where
        assert built["Description-Content-Type"] == "text/markdown", where
        readme = (folder / meta["readme"]).read_text()
        assert str(built.get_payload()).strip() == readme.strip(), f"{where}: README"
        if folder != ROOT:
            requires = [Requirement(r) for r in built.get_all("Requires-Dist", [])]
            kit = [r.specifier for r in requires if r.name == KIT]
            assert kit == [compatible_minor(KIT_VERSION)], where
