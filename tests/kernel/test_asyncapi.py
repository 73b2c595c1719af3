"""``corec-kit asyncapi``: the AsyncAPI 3.0 document of the installed kit.

The real console script writes the documents (JSON and YAML); the tests check their structure
against the kit itself (the routing table and ``describe``, every error type, the configured and
partitioned stream names, the redacted server), and the slow one has the AsyncAPI parser
(``asyncapi validate`` of the npm package ``@asyncapi/cli``) accept them.

The parser is found through ``COREC_ASYNCAPI_CLI`` (the path of an ``asyncapi`` binary), else in
the folder ``.ci/asyncapi-cli`` installs it into, which the fixture runs when npm is there
(about 2 minutes and 1.5 GB the first time; later runs reuse the folder). Missing, it fails the
test when ``CI`` is set and skips it, saying why, otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import corec_plugin_kit
from corec_plugin_kit import errors
from corec_plugin_kit.asyncapi import HASH_TAG_PARAMETER, _address
from corec_plugin_kit.envelopes import DEAD_LETTER_FIELDS, ErrorType, result_envelope
from corec_plugin_kit.runtime.testing import require_service

ROOT = Path(__file__).resolve().parents[2]
KIT = str(Path(sys.executable).parent / "corec-kit")
INSTALLER = ROOT / ".ci" / "asyncapi-cli"

#: A processor whose params models have what pydantic writes under ``$defs``: nested models (one
#: given a description, so its ``$ref`` has a sibling), a recursive model, a tuple, a
#: discriminated union, a model named like one of the kit's own schemas (``Error``), and
#: actions whose names are not valid component names (``:``).
DEMO = """
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field

from corec_plugin_kit import hookimpl


class Inner(BaseModel):
    x: int


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = 9


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool = True


class Node(BaseModel):
    name: str
    children: list[Node] = []


class Error(BaseModel):
    code: int


class Shapes(BaseModel):
    inner: Inner = Field(description="an inner model, described")
    pair: tuple[int, str]
    pet: Annotated[Union[Cat, Dog], Field(discriminator="kind")]
    tree: Node | None = None
    err: Error | None = None


async def handle(params, ctx):
    return {}


@hookimpl
def corec_register_actions(register):
    register("demo:shapes", handle, Shapes)
    register("demo.tree", handle, Node)
    register("demo-inner", handle, Inner)
"""


# --------------------------------------------------------------------------- helpers


def run_kit(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed ``corec-kit`` in ``cwd`` (no outer ``COREC_*`` variable, metrics off)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("COREC_", "_COREC"))}
    full_env.update(
        COREC_KERNEL__STATE_DIR=str(cwd / ".corec"), COREC_KERNEL__METRICS_PORT="0", **(env or {})
    )
    return subprocess.run(
        [KIT, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def document(cwd: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = run_kit(*args, "asyncapi", cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """The value a local ``$ref`` (a JSON pointer) points to; KeyError when it points nowhere."""
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from keys(value)


def assert_well_formed(doc: dict[str, Any]) -> None:
    """What the parser also checks, here without it: every ``$ref`` resolves, no ``$defs``
    is left, every ``{parameter}`` of an address is defined, names are valid component keys."""
    for ref in refs(doc):
        resolve(doc, ref)
    assert "$defs" not in set(keys(doc))
    assert not any(ref.startswith("#/$defs") for ref in refs(doc))
    for name, channel in doc["channels"].items():
        address = channel["address"]
        wanted = set(re.findall(r"\{([^}]*)\}", address or ""))
        assert wanted == set(channel.get("parameters", {})), name
    for section in doc["components"].values():
        assert all(re.fullmatch(r"[\w.\-]+", name) for name in section), list(section)
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["version"] == corec_plugin_kit.__version__


def command_schema(doc: dict[str, Any], action: str) -> dict[str, Any]:
    """The command payload schema of ``action``'s message (found by the message's name)."""
    found = [m for m in doc["components"]["messages"].values() if m.get("name") == action]
    assert len(found) == 1, action
    schema: dict[str, Any] = resolve(doc, found[0]["payload"]["$ref"])
    return schema


def schema_of(doc: dict[str, Any], node: dict[str, Any]) -> Any:
    return resolve(doc, node["$ref"]) if "$ref" in node else node


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("asyncapi")


@pytest.fixture(scope="module")
def default_doc(workdir: Path) -> dict[str, Any]:
    """The installed kit's document with no configuration, from stdout."""
    return document(workdir)


@pytest.fixture(scope="module")
def demo_env(workdir: Path) -> dict[str, str]:
    """Three partitions, hash-tagged input, a Redis URL with a password, the demo processor."""
    (workdir / "asyncapi_demo.py").write_text(textwrap.dedent(DEMO))
    return {
        "PYTHONPATH": str(workdir),
        "COREC_PLUGINS": "demo=asyncapi_demo",
        "COREC_KERNEL__PARTITIONS": "3",
        "COREC_KERNEL__STREAM_IN": "{corec}:commands",
        "COREC_KERNEL__REDIS_URL": "redis://bob:s3cret@cache.example:6380/2",
        "COREC_KERNEL__REPLY_TO_PATTERN": r"\{corec\}:replies:.*",
    }


@pytest.fixture(scope="module")
def demo_doc(workdir: Path, demo_env: dict[str, str]) -> dict[str, Any]:
    return document(workdir, env=demo_env)


# --------------------------------------------------------------------------- structure


def test_json_to_stdout_and_to_a_file_is_one_document(
    workdir: Path, default_doc: dict[str, Any]
) -> None:
    done = run_kit("asyncapi", "--format", "json", "-o", "out.json", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert json.loads((workdir / "out.json").read_text(encoding="utf-8")) == default_doc
    assert_well_formed(default_doc)
    assert set(default_doc["channels"]) == {"commands", "results", "replies", "deadLetters"}
    assert set(default_doc["operations"]) == {
        "sendCommand", "receiveCommand", "sendResult", "receiveResult", "sendDeadLetter",
        "receiveDeadLetter",
    }  # fmt: skip


def test_yaml_is_the_same_document(workdir: Path, default_doc: dict[str, Any]) -> None:
    try:
        import yaml
    except ImportError:  # pragma: no cover - a dependency of the kit
        pytest.fail("PyYAML is not installed: it is a dependency of the kit (pyproject.toml)")
    done = run_kit("asyncapi", "--format", "yaml", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("asyncapi: 3.0.0\n")
    assert yaml.safe_load(done.stdout) == default_doc
    # -o FILE.yaml picks YAML by itself.
    done = run_kit("asyncapi", "-o", "doc.yml", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load((workdir / "doc.yml").read_text(encoding="utf-8")) == default_doc


def test_yaml_without_pyyaml_says_what_to_install(
    corec_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` raises ImportError
    result = corec_cli("asyncapi", "--format", "yaml")
    assert result.exit_code == 1
    assert "needs PyYAML" in result.output
    assert "pip install 'pyyaml>=6.0.2'" in result.output


def test_every_routed_action_has_its_message_and_params_schema(
    default_doc: dict[str, Any], corec_cli: Any
) -> None:
    listed = corec_cli("actions", "--json")
    assert listed.exit_code == 0, listed.output
    actions = sorted(json.loads(listed.output))
    assert {"ping", "generate_plugin", "review_code"} <= set(actions)
    channel = default_doc["channels"]["commands"]["messages"]
    assert len(channel) == len(actions)
    operation = default_doc["operations"]["sendCommand"]["messages"]
    assert sorted(resolve(default_doc, ref["$ref"])["$ref"] for ref in operation) == sorted(
        ref["$ref"] for ref in channel.values()
    )
    for action in actions:
        described = corec_cli("describe", action)
        assert described.exit_code == 0, described.output
        params_schema = json.loads(described.output)["params_schema"]
        schema = command_schema(default_doc, action)
        assert schema["additionalProperties"] is False
        assert schema["required"] == ["action"]
        assert schema["properties"]["action"] == {"type": "string", "const": action}
        assert set(schema["properties"]) == {"action", "params", "id", "reply_to", "meta"}
        # These models have no $defs: the component is the schema `describe` prints.
        assert "$defs" not in params_schema
        assert schema_of(default_doc, schema["properties"]["params"]) == params_schema


def test_result_error_and_dead_letter_schemas(default_doc: dict[str, Any]) -> None:
    schemas = default_doc["components"]["schemas"]
    enum = schemas["ErrorType"]["enum"]
    defined = {
        cls.wire_type
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.CorecError)
    }
    assert defined <= set(enum)
    assert set(ErrorType.__args__) <= set(enum)
    assert {"unauthorized", "rate_limited", "timeout", "dead_letter"} <= set(enum)
    assert enum == sorted(set(enum))
    assert schemas["ResultEnvelope"]["required"] == list(result_envelope("k", "a"))
    assert set(schemas["ResultEnvelope"]["properties"]) == {*result_envelope("k", "a"), "replayed"}
    assert schemas["ResultEnvelope"]["properties"]["status"]["enum"] == ["ok", "error"]
    error = schema_of(default_doc, schemas["ResultEnvelope"]["properties"]["error"]["anyOf"][0])
    assert resolve(default_doc, error["properties"]["type"]["$ref"])["enum"] == enum
    assert schemas["DeadLetter"]["required"] == [field.decode() for field in DEAD_LETTER_FIELDS]
    messages = default_doc["components"]["messages"]
    assert resolve(default_doc, messages["result"]["payload"]["$ref"]) is schemas["ResultEnvelope"]
    assert resolve(default_doc, messages["deadLetter"]["payload"]["$ref"]) is schemas["DeadLetter"]


def test_channel_addresses_are_the_configured_streams(
    workdir: Path, default_doc: dict[str, Any]
) -> None:
    channels = default_doc["channels"]
    defaults = {"commands": "corec_commands", "results": "corec_responses",
                "deadLetters": "corec_dead_letters"}  # fmt: skip
    for name, stream in defaults.items():
        assert channels[name]["address"] == stream
        assert channels[name]["x-corec-streams"] == [stream]
        assert "parameters" not in channels[name]
    assert channels["replies"]["address"] is None
    assert "parameters" not in default_doc["components"]
    env = {"COREC_KERNEL__STREAM_IN": "jobs", "COREC_KERNEL__STREAM_OUT": "jobs:done",
           "COREC_KERNEL__DEAD_LETTER_STREAM": "jobs.failed"}  # fmt: skip
    doc = document(workdir, env=env)
    assert_well_formed(doc)
    assert [doc["channels"][c]["address"] for c in ("commands", "results", "deadLetters")] == [
        "jobs", "jobs:done", "jobs.failed",
    ]  # fmt: skip
    # reply_to may never name the input or the dead-letter stream.
    assert doc["components"]["schemas"]["ReplyTo"]["not"] == {"enum": ["jobs", "jobs.failed"]}


def test_partitions_give_a_hash_tag_parameter_per_partition(
    workdir: Path, demo_env: dict[str, str], demo_doc: dict[str, Any]
) -> None:
    assert_well_formed(demo_doc)
    done = run_kit("streams", "--json", cwd=workdir, env=demo_env)
    assert done.returncode == 0, done.stderr
    sets = json.loads(done.stdout)
    assert len(sets) == 3
    parameter = demo_doc["components"]["parameters"][HASH_TAG_PARAMETER]
    tags = parameter["enum"]
    assert len(tags) == 3
    assert "default" not in parameter
    for channel, field in (("commands", "stream_in"), ("results", "stream_out"),
                           ("deadLetters", "dead_letter_stream")):  # fmt: skip
        body = demo_doc["channels"][channel]
        names = [row[field] for row in sets]
        assert body["x-corec-streams"] == names
        assert body["parameters"] == {
            HASH_TAG_PARAMETER: {"$ref": f"#/components/parameters/{HASH_TAG_PARAMETER}"}
        }
        # The address with partition i's value put in is partition i's stream.
        assert [body["address"].replace("{hashTag}", tag) for tag in tags] == names
    assert demo_doc["channels"]["commands"]["address"] == "{hashTag}:commands"
    assert demo_doc["channels"]["results"]["address"] == "corec_responses{hashTag}"
    assert demo_doc["info"]["x-corec-partitions"] == 3
    refused = demo_doc["components"]["schemas"]["ReplyTo"]["not"]["enum"]
    assert set(refused) == {row[f] for row in sets for f in ("stream_in", "dead_letter_stream")}
    assert r"\{corec\}:replies:.*" in demo_doc["components"]["schemas"]["ReplyTo"]["description"]


def test_a_hash_tag_without_partitions_is_a_one_value_parameter(workdir: Path) -> None:
    doc = document(workdir, env={"COREC_KERNEL__STREAM_IN": "{corec}:commands"})
    assert_well_formed(doc)
    commands = doc["channels"]["commands"]
    assert commands["address"] == "{hashTag}:commands"
    assert commands["parameters"][HASH_TAG_PARAMETER]["enum"] == ["{corec}"]
    assert commands["parameters"][HASH_TAG_PARAMETER]["default"] == "{corec}"
    assert doc["channels"]["results"]["address"] == "corec_responses"
    assert "parameters" not in doc["channels"]["results"]
    assert "parameters" not in doc["components"]  # not shared: one channel has it


def test_names_that_cannot_be_an_address() -> None:
    assert _address(["corec"]) == ("corec", None)
    assert _address(["a{b"]) == (None, None)  # a stray brace, no hash tag
    assert _address(["{}x"]) == (None, None)  # an empty tag is no tag
    assert _address(["{t}x{y}"]) == (None, None)  # a brace outside the tag
    assert _address(["x{p0}", "x{p1.2}"]) == ("x{hashTag}", ["{p0}", "{p1.2}"])


def test_pydantic_defs_become_components(demo_doc: dict[str, Any]) -> None:
    schemas = demo_doc["components"]["schemas"]
    shapes = schema_of(demo_doc, command_schema(demo_doc, "demo:shapes")["properties"]["params"])
    assert shapes["title"] == "Shapes"
    props = shapes["properties"]
    # A $ref with a sibling (the description) is wrapped: draft 07 ignores a $ref's siblings.
    assert props["inner"] == {
        "description": "an inner model, described",
        "allOf": [{"$ref": "#/components/schemas/Inner"}],
    }
    # The action whose params model is Inner itself shares that component.
    inner = command_schema(demo_doc, "demo-inner")["properties"]["params"]
    assert inner == {"$ref": "#/components/schemas/Inner"}
    # A recursive model: its component refers to itself, and demo.tree's params are it.
    assert command_schema(demo_doc, "demo.tree")["properties"]["params"] == {
        "$ref": "#/components/schemas/Node"
    }
    assert schemas["Node"]["properties"]["children"]["items"] == {
        "$ref": "#/components/schemas/Node"
    }
    # The processor's own `Error` model does not replace the kit's Error schema.
    assert props["err"]["anyOf"][0] == {"$ref": "#/components/schemas/Error_2"}
    assert schemas["Error_2"]["title"] == "Error"
    assert schemas["Error"]["properties"]["type"] == {"$ref": "#/components/schemas/ErrorType"}
    # A tuple (prefixItems) is an items list; pydantic's discriminator object is kept aside.
    assert props["pair"]["items"] == [{"type": "integer"}, {"type": "string"}]
    assert "prefixItems" not in props["pair"]
    assert "discriminator" not in props["pet"]
    assert props["pet"]["x-discriminator"]["mapping"] == {
        "cat": "#/components/schemas/Cat",
        "dog": "#/components/schemas/Dog",
    }
    # Component keys of actions whose names hold a ':' are valid ones.
    assert "demo_shapes" in demo_doc["components"]["messages"]
    assert "DemoShapesCommand" in schemas


def test_server_url_is_redacted(default_doc: dict[str, Any], demo_doc: dict[str, Any]) -> None:
    server = demo_doc["servers"]["redis"]
    assert server["host"] == "cache.example:6380"
    assert server["pathname"] == "/2"
    assert server["protocol"] == "redis"
    assert "redis://bob:***@cache.example:6380/2" in server["description"]
    assert "s3cret" not in json.dumps(demo_doc)
    assert server["security"] == [{"$ref": "#/components/securitySchemes/redisAuth"}]
    embedded = default_doc["servers"]["embedded"]
    assert embedded["pathname"].endswith("/.corec/valkey/valkey.sock")
    assert "kernel.redis_url is unset" in embedded["description"]


def test_help_does_not_import_the_builder(tmp_path: Path) -> None:
    """``corec-kit asyncapi --help`` is as cheap as every other command's."""
    code = (
        "import json, sys\n"
        "from corec_plugin_kit.cli import cli\n"
        "cli.main(['asyncapi', '--help'], prog_name='corec-kit', standalone_mode=False)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Print the AsyncAPI 3.0 document" in done.stdout
    modules = json.loads(done.stdout.splitlines()[-1])
    heavy = [m for m in modules if m.split(".")[0] in ("pydantic", "redis", "yaml", "orjson")]
    assert heavy == []
    assert "corec_plugin_kit.asyncapi" not in modules


# --------------------------------------------------------------------------- the AsyncAPI parser


def _works(binary: Path) -> bool:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    done = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    return done.returncode == 0


@pytest.fixture(scope="session")
def asyncapi_cli() -> Path:
    """The ``asyncapi`` binary: ``COREC_ASYNCAPI_CLI``, else the one ``.ci/asyncapi-cli``
    installs (run here when it is not there yet and npm is)."""
    configured = os.environ.get("COREC_ASYNCAPI_CLI")
    if configured:
        binary = Path(configured)
        assert _works(binary), f"COREC_ASYNCAPI_CLI={configured} is not a working asyncapi binary"
        return binary
    done = subprocess.run(
        ["bash", str(INSTALLER)], capture_output=True, text=True, timeout=900, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines and _works(Path(lines[-1])):
        return Path(lines[-1])
    if shutil.which("npm") is None:
        require_service(
            False, "npm (to install the AsyncAPI CLI, @asyncapi/cli)", "is not installed"
        )
    require_service(
        False,
        "the AsyncAPI CLI",
        f"could not be installed by .ci/asyncapi-cli (exit {done.returncode}): "
        f"{done.stderr.strip()[-1500:]}",
    )
    raise AssertionError("unreachable")  # require_service skipped or failed


def validate(binary: Path, path: Path, tmp_path: Path) -> tuple[int, list[dict[str, Any]], str]:
    """``asyncapi validate`` of one file: its exit status (non-zero on any error or warning,
    ``--fail-severity warn``), its diagnostics (``--diagnostics-format json``) and its output."""
    analytics = tmp_path / "asyncapi-analytics.json"  # no usage metrics, no file in $HOME
    analytics.write_text('{"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "x"}')
    env = {**os.environ, "ASYNCAPI_METRICS_CONFIG_PATH": str(analytics)}
    done = subprocess.run(
        [str(binary), "validate", str(path), "--diagnostics-format", "json",
         "--fail-severity", "warn"],
        capture_output=True, text=True, timeout=120, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    output = done.stdout + done.stderr
    start = re.search(r"^\[", done.stdout, flags=re.MULTILINE)
    diagnostics = json.loads(done.stdout[start.start() :]) if start else []
    return done.returncode, diagnostics, output


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the first run installs the CLI (about 2 minutes)
def test_the_asyncapi_parser_accepts_the_documents(
    asyncapi_cli: Path,
    workdir: Path,
    demo_env: dict[str, str],
    demo_doc: dict[str, Any],
    tmp_path: Path,
) -> None:
    written = []
    for name, env in (("default.json", None), ("default.yaml", None), ("demo.json", demo_env)):
        done = run_kit("asyncapi", "-o", str(tmp_path / name), cwd=workdir, env=env)
        assert done.returncode == 0, done.stderr
        written.append(tmp_path / name)
    for path in written:
        status, diagnostics, output = validate(asyncapi_cli, path, tmp_path)
        serious = [d for d in diagnostics if d.get("severity") in (0, 1)]
        assert status == 0 and not serious, f"{path.name}:\n{output}"
        assert "is valid" in output, output

    # The check is not blind: the pydantic forms this module rewrites are refused.
    broken = json.loads(json.dumps(demo_doc))
    shapes = broken["components"]["schemas"]["Shapes"]
    shapes["properties"]["tree"] = {"$ref": "#/$defs/Node"}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    status, diagnostics, output = validate(asyncapi_cli, tmp_path / "broken.json", tmp_path)
    assert status != 0, output
    assert any(d.get("code") == "invalid-ref" and d.get("severity") == 0 for d in diagnostics), (
        output
    )
    shapes["properties"]["tree"] = {"$ref": "#/components/schemas/Node"}
    shapes["properties"]["pet"]["discriminator"] = shapes["properties"]["pet"].pop(
        "x-discriminator"
    )
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    status, diagnostics, output = validate(asyncapi_cli, tmp_path / "broken.json", tmp_path)
    assert status != 0, output
    assert any(d.get("severity") == 0 for d in diagnostics), output
