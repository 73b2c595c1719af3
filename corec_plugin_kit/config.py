"""Configuration: one JSON or TOML file, environment overrides, one section per processor.

Where the file comes from, first match wins: ``--config PATH``, ``$COREC_CONFIG``, ``./corec.json``,
``./corec.toml``; none at all is fine (every key has a default).

Environment overrides, applied on top of the file:

* ``COREC_<KEY>`` for kernel keys, e.g. ``COREC_REDIS_URL``, ``COREC_DATABASE_URL``;
* ``COREC_<SECTION>__<KEY>[__<SUBKEY>]`` for any section, e.g. ``COREC_KERNEL__METRICS_PORT=0``,
  ``COREC_GENERATOR__OUTPUT_PLUGINS=out``, ``COREC_KERNEL__CIRCUIT_BREAKER__MAX_FAILURES=3``.

Values are parsed as JSON when they parse (numbers, booleans, lists), else taken as strings.
Every problem in every section is collected and raised once as :class:`ConfigError`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .errors import ConfigError
from .policies import ActionPolicy
from .redaction import userinfo_end

log = logging.getLogger(__name__)

ENV_PREFIX = "COREC_"
# Variables that configure the CLI or loader rather than a config key.
_NOT_KEYS = {"CONFIG", "STRICT_PROCESSORS", "LOAD_PROCESSORS", "DISABLE_PROCESSORS", "TRACE_HOOKS"}


REDIS_FORMS = (
    "redis://[[user]:password@]host[:port][/db], rediss://... (TLS) or unix:///path/to/redis.sock; "
    "leave it unset for the embedded server"
)
DATABASE_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "postgresql://user:password@host:5432/dbname (or postgres://, postgresql+asyncpg://), "
    "or leave it unset for SQLite at <state_dir>/corec.db"
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]*)(?::([^:]*))?")


def _split_url(url: str, forms: str, raw_at: bool = True) -> tuple[str, str, str] | str:
    """``(scheme, hosts, rest)`` of a URL, or the problem with it (never quoting the URL).

    ``hosts`` is what comes between the userinfo and the path; ``rest`` is the path onwards.
    ``raw_at``: the driver reads a raw ``@`` in the password (redis-py does, asyncpg does not).
    """
    match = _SCHEME.match(url)
    if match is None:
        return f"not a URL; write {forms}"
    rest = url[match.end() :]
    at = userinfo_end(rest)
    if at != -1 and any(mark in rest[:at] for mark in ("/?#" if raw_at else "/?#@")):
        return (
            "the user name or password holds a raw '/', '?', '#' or '@': "
            "percent-encode them (%2F, %3F, %23, %40)"
        )
    after = rest[at + 1 :]
    hosts = re.split(r"[/?#]", after, maxsplit=1)[0]
    return match.group(1).lower(), hosts, after[len(hosts) :]


def _host_problem(hosts: str, forms: str, *, many: bool = False) -> str | None:
    for spec in hosts.split(",") if many else [hosts]:
        found = _HOST_PORT.fullmatch(spec)
        if found is None or not found.group(1):
            return f"names no host; write {forms}"
        port = found.group(2)
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            return f"the port is not a number from 1 to 65535; write {forms}"
    return None


def _is_uint(value: str) -> bool:
    return value.isdigit()


def _is_positive(value: str) -> bool:
    try:
        return float(value) > 0
    except ValueError:
        return False


def _is_bool(value: str) -> bool:
    # What redis-py's to_bool reads as false ("0", "f", "false", "n", "no") or plainly true.
    return value.lower() in {"0", "1", "f", "t", "false", "true", "n", "y", "no", "yes"}


#: Query parameters of a Redis URL that redis-py reads and corec-kit passes on, each with a
#: check of its value and what the value must be. redis-py hands any other parameter to its
#: connection class, which fails on it at connect time: it is a config error here instead.
REDIS_QUERY_PARAMS: dict[str, tuple[Callable[[str], bool], str]] = {
    "db": (_is_uint, "a database number"),
    "username": (bool, ""),
    "password": (bool, ""),
    "client_name": (bool, ""),
    "protocol": (lambda value: value in ("2", "3"), "2 or 3"),
    "socket_timeout": (_is_positive, "seconds (a number > 0)"),
    "socket_connect_timeout": (_is_positive, "seconds (a number > 0)"),
    "socket_keepalive": (_is_bool, "true or false"),
    "retry_on_timeout": (_is_bool, "true or false"),
    "health_check_interval": (_is_uint, "whole seconds"),
    "max_connections": (lambda value: value.isdigit() and int(value) > 0, "a number >= 1"),
    "ssl_cert_reqs": (lambda value: value in ("none", "optional", "required"),
                      "none, optional or required"),
    "ssl_check_hostname": (_is_bool, "true or false"),
}  # fmt: skip
#: redis-py's TLS file parameters: read from the kernel keys instead, which are checked.
REDIS_TLS_FILE_PARAMS = {
    "ssl_ca_certs": "redis_tls_ca_file",
    "ssl_certfile": "redis_tls_cert_file",
    "ssl_keyfile": "redis_tls_key_file",
}


def _redis_query_problem(scheme: str, query: str) -> str | None:
    """What is wrong with the query of a Redis URL (never quoting a value: passwords)."""
    for name, value in parse_qsl(query):  # redis-py drops parameters without a value too
        if name in REDIS_TLS_FILE_PARAMS:
            key = REDIS_TLS_FILE_PARAMS[name]
            return (
                f"the query parameter {name} is not read: set kernel.{key} "
                f"(COREC_{key.upper()}) to the file instead"
            )
        check = REDIS_QUERY_PARAMS.get(name)
        if check is None:
            known = ", ".join(sorted(REDIS_QUERY_PARAMS))
            return f"the query parameter {name!r} is not one redis-py reads here ({known})"
        if name.startswith("ssl_") and scheme != "rediss":
            return f"the query parameter {name} is a TLS setting: it needs a rediss:// URL"
        valid, wanted = check
        if not valid(value):
            return f"the query parameter {name} must be {wanted}"
    return None


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a ``kernel.redis_url`` (``None`` when it is usable)."""
    split = _split_url(url, REDIS_FORMS)
    if isinstance(split, str):
        return split
    scheme, hosts, rest = split
    if scheme not in ("redis", "rediss", "unix"):
        return (
            f"redis_url must start with redis://, rediss:// or unix://, not {scheme}://; "
            f"write {REDIS_FORMS}"
        )
    path = re.split(r"[?#]", rest, maxsplit=1)[0]
    query = rest[len(path) :].split("#", 1)[0].removeprefix("?")
    if scheme == "unix":
        if hosts or len(path) < 2:
            return f"names no socket file; write {REDIS_FORMS}"
        return _redis_query_problem(scheme, query)
    if path.strip("/") and not path.strip("/").isdigit():
        return f"the database after the host must be a number; write {REDIS_FORMS}"
    return _host_problem(hosts, REDIS_FORMS) or _redis_query_problem(scheme, query)


#: What each TLS file key must hold (for the messages).
_TLS_FILES = {
    "redis_tls_ca_file": "the CA certificate(s), PEM, that the Redis server's certificate "
    "chains to",
    "redis_tls_cert_file": "the client certificate, PEM, that the Redis server checks",
    "redis_tls_key_file": "the unencrypted private key, PEM, of redis_tls_cert_file",
}


def tls_file_problem(key: str, path: Path) -> str | None:
    """What is wrong with the file a ``kernel.redis_tls_*_file`` key names (its content is
    loaded when connecting)."""
    if not path.exists():
        return f"no such file: {path} (it must hold {_TLS_FILES[key]})"
    if not path.is_file():
        return f"not a file: {path} (it must hold {_TLS_FILES[key]})"
    if not os.access(path, os.R_OK):
        return f"cannot be read by this user: {path}"
    return None


#: The ``sslmode`` values asyncpg (as libpq) accepts in a PostgreSQL URL.
PG_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def database_url_problem(url: str) -> str | None:
    """What is wrong with a ``kernel.database_url`` (``None`` when it is usable)."""
    split = _split_url(url, DATABASE_FORMS, raw_at=False)
    if isinstance(split, str):
        return split
    scheme, hosts, rest = split
    if scheme == "sqlite":
        if hosts or len(rest) < 2 or not rest.startswith("/"):
            return (
                "names no file: write sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db (in-memory SQLite would lose every record)"
            )
        return None
    if scheme not in ("postgresql", "postgres", "postgresql+asyncpg"):
        return f"database_url is {scheme}://...; accepted: {DATABASE_FORMS}"
    query = rest.split("?", 1)[1].split("#", 1)[0] if "?" in rest else ""
    for name, value in parse_qsl(query):
        # asyncpg reads sslmode (and sslrootcert, sslcert, sslkey...) from the DSN as given; a
        # mistyped mode would be its ClientConfigurationError at connect time.
        if name == "sslmode" and value not in PG_SSLMODES:
            return f"the query parameter sslmode must be one of {', '.join(PG_SSLMODES)}"
    if not hosts and re.search(r"[?&]host=", rest):
        return None  # postgresql://user@/db?host=/run/postgresql: a Unix socket
    return _host_problem(hosts, DATABASE_FORMS, many=True)


class CircuitBreakerConfig(BaseModel):
    """Per-processor circuit breaker."""

    model_config = ConfigDict(extra="forbid")

    max_failures: int = Field(5, ge=1, description="consecutive failures that open the breaker")
    reset_timeout: float = Field(30.0, gt=0, description="seconds open before one probe is let in")


class KernelConfig(BaseModel):
    """The ``kernel`` section. Key names follow the original CoreC plugin guide."""

    # Environment values are parsed as JSON, so COREC_KERNEL__GROUP=7 arrives as a number.
    # A ValidationError's text never shows the input: the URLs hold passwords.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, hide_input_in_errors=True)

    # Defaults are codex's stream names (plugins/codex/cli.py, processors/manager.py).
    stream_in: str = Field("corec_commands", min_length=1, description="stream commands arrive on")
    stream_out: str = Field("corec_responses", min_length=1, description="default reply stream")
    dead_letter_stream: str = Field(
        "corec_dead_letters",
        min_length=1,
        description="stream of commands that exhausted max_deliveries",
    )
    group: str = Field("corec", min_length=1, description="consumer group name")
    consumer: str | None = Field(None, description="consumer name; default host-pid")
    group_start_id: str = Field(
        "0", description="where a new group starts: 0 = whole stream, $ = new"
    )
    partitions: int = Field(
        1,
        ge=1,
        le=1024,
        description="input partitions: P sets of the three streams, on P hash slots spread "
        "over a Redis Cluster; a command goes to crc32(id) % P (docs/operations.md)",
    )
    redis_url: SecretStr | None = Field(
        None, description="redis://, rediss:// or unix:// URL; unset = embedded Valkey"
    )
    # After redis_url: their validator reads it (rediss:// only).
    redis_tls_ca_file: Path | None = Field(
        None,
        description="rediss://: CA certificate file (PEM) the server's certificate must chain "
        "to; unset = the system's CAs",
    )
    redis_tls_cert_file: Path | None = Field(
        None,
        description="rediss://: client certificate file (PEM), for a server that requires one",
    )
    redis_tls_key_file: Path | None = Field(
        None,
        description="rediss://: the client certificate's private key file (PEM, unencrypted); "
        "unset = in redis_tls_cert_file",
    )
    database_url: SecretStr | None = Field(
        None, description="postgresql:// or sqlite:/// URL; unset = SQLite in state_dir"
    )
    records: bool = Field(True, description="write a record per command (off only for benchmarks)")
    replay_finished: bool = Field(
        True,
        description="records on: a command key that already has an ok record is answered from "
        "it (`replayed`), not run again; off = at-least-once",
    )
    metrics_port: int = Field(8000, ge=0, le=65535, description="Prometheus port; 0 = off")
    metrics_addr: str = Field("127.0.0.1", description="address the metrics server binds")
    concurrency: int = Field(512, ge=1, le=10_000, description="commands in flight per worker")
    batch_size: int = Field(256, ge=1, le=10_000, description="entries per XREADGROUP")
    block_ms: int = Field(1000, ge=1, description="XREADGROUP BLOCK while idle")
    claim_idle_ms: int = Field(60_000, ge=1, description="idle time before XAUTOCLAIM reclaims")
    max_deliveries: int = Field(5, ge=1, description="deliveries before dead-lettering")
    handler_timeout_s: float = Field(
        60.0, gt=0, description="handler timeout, and the ceiling of an action's own timeout_s"
    )
    action_timeouts: dict[str, float] = Field(
        default_factory=dict,
        description="action -> timeout in seconds, over the action's own default and "
        "handler_timeout_s",
    )
    shutdown_grace_s: float = Field(10.0, ge=0, description="SIGTERM: time to finish in-flight")
    max_payload_bytes: int = Field(1_048_576, ge=64, description="larger entries are rejected")
    stream_maxlen: int | None = Field(
        None, ge=1, description="approximate MAXLEN for result/dead-letter streams; None = no trim"
    )
    trim_stream_in: bool = Field(
        True, description="XTRIM MINID ~ stream_in below what every group has read and acked"
    )
    min_replicas_ack: int = Field(
        0,
        ge=0,
        description="WAIT for this many replicas after each commit before going on; 0 = off",
    )
    min_replicas_timeout_ms: int = Field(
        1000, ge=1, description="how long one commit's WAIT may take (then a warning)"
    )
    trim_interval_s: float = Field(10.0, gt=0, description="seconds between input trims")
    records_retention_days: float | None = Field(
        None, gt=0, description="`history --purge` deletes older records; None = keep all"
    )
    reply_to_max_length: int = Field(
        200, ge=1, le=1000, description="longest acceptable `reply_to` stream name"
    )
    reply_to_pattern: str | None = Field(
        None,
        description="regular expression a `reply_to` must match in full; None = any name "
        "(the input and dead-letter streams are always refused)",
    )
    dead_consumer_idle_ms: int | None = Field(
        3_600_000,
        ge=1,
        description="consumers idle this long that own no pending entry are removed from the "
        "group; None = keep them",
    )
    publish_figures: bool = Field(
        True,
        description="each worker process writes its figures (commands by outcome, durations, "
        "in flight, breakers) to the hash `<stream_in>:workers` every 2 s, for `manager stats` "
        "and the console on any host; false = not written",
    )
    circuit_breaker: CircuitBreakerConfig = Field(
        default_factory=lambda: CircuitBreakerConfig.model_validate({}),
        description="max_failures, reset_timeout",
    )
    state_dir: Path = Field(Path(".corec"), description="embedded Valkey socket, AOF, SQLite file")
    load_processors: list[str] | None = Field(None, description="allowlist of processor names")
    disable_processors: list[str] = Field(default_factory=list, description="blocklist")
    strict_processors: bool = Field(False, description="a processor that fails to load is fatal")
    action_owners: dict[str, str] = Field(
        default_factory=dict, description="action -> processor that wins a conflict"
    )
    action_policies: dict[str, ActionPolicy] = Field(
        default_factory=dict,
        description="action -> {retry: {attempts, base_s, max_s}, rate_limit, rate_burst, "
        "max_concurrency}, over what the processor registered (docs/configuration.md)",
    )

    @field_validator("redis_url", "database_url")
    @classmethod
    def _url(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # Malformed URLs are config errors here, once, so every command exits 3 for them. The
        # messages never echo the value: it holds a password.
        if value is None:
            return None
        url = value.get_secret_value().strip()
        problem = (
            redis_url_problem(url) if info.field_name == "redis_url" else database_url_problem(url)
        )
        if problem:
            raise PydanticCustomError("url", problem)
        return SecretStr(url)

    @field_validator("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
    @classmethod
    def _tls_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        problem = tls_file_problem(str(info.field_name), value)
        if problem:
            raise PydanticCustomError("tls_file", "{problem}", {"problem": problem})
        url = info.data.get("redis_url")  # absent when it is invalid: reported already
        # Unset: the embedded server on a unix socket, which no TLS key concerns.
        if url is not None and not url.get_secret_value().lower().startswith("rediss://"):
            raise PydanticCustomError(
                "tls_needs_rediss",
                "set, but kernel.redis_url is not a rediss:// URL, so TLS is off; write "
                "rediss://host:port, or unset this key",
            )
        return value

    @field_validator("reply_to_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @field_validator("action_timeouts")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, v in value.items() if not v > 0)
        if bad:
            raise ValueError(f"timeouts must be > 0 seconds: {', '.join(bad)}")
        return value

    @field_validator("load_processors", "disable_processors", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def consumer_name(self) -> str:
        return self.consumer or f"{socket.gethostname()}-{os.getpid()}"


def _default_text(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value)}`"


def kernel_keys_table() -> str:
    """The Markdown table of every kernel key, its default and its variable (docs/configuration.md).

    Generated from :class:`KernelConfig` so the documentation cannot miss a key; a test compares
    the page with this output.
    """
    rows = ["| key | default | environment variable | meaning |", "|---|---|---|---|"]

    def add(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            key = f"{prefix}{name}"
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                add(annotation, f"{key}.")
                continue
            default = info.get_default(call_default_factory=True)
            env = "COREC_KERNEL__" + key.upper().replace(".", "__")
            rows.append(
                f"| `{key}` | {_default_text(default)} | `{env}` | {info.description or ''} |"
            )

    add(KernelConfig, "")
    return "\n".join(rows)


# --------------------------------------------------------------------------- CoreC and codex

#: Keys of a CoreC plugin's config section (PLUGINS_GUIDE.md's ``PluginConfig``, the keys of
#: codex's ``config.json`` section ``codex``) and the corec-kit key each one sets.
COREC_KEY_MAP: dict[str, tuple[str, str]] = {
    "stream_in": ("kernel", "stream_in"),
    "stream_out": ("kernel", "stream_out"),
    "metrics_port": ("kernel", "metrics_port"),
    "circuit_breaker": ("kernel", "circuit_breaker"),
    "templates_dir": ("generator", "templates_dir"),
    "output_plugins": ("generator", "output_plugins"),
    "output_websites": ("generator", "output_websites"),
    "exclude_patterns": ("generator", "exclude_patterns"),
}
#: CoreC's own keys of a plugin's section (``config/corec_config.json``): recognised, ignored.
COREC_IGNORED_KEYS = frozenset({"enabled", "path", "bloque"})
#: The section codex's ``config.json`` nests its settings in.
CODEX_SECTION = "codex"


def from_corec_section(
    section: Mapping[str, Any], *, keep: Iterable[str] = (), where: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """Map a CoreC plugin's config section onto corec-kit sections.

    ``section`` is the guide's flat ``PluginConfig`` (``stream_in``, ``stream_out``,
    ``metrics_port``, ``circuit_breaker``, ``templates_dir``, ``output_plugins``,
    ``output_websites``, ``exclude_patterns``), codex's ``{"codex": {...those keys...}}``, or
    both (the ``codex`` keys win). Returns ``(overrides, warnings)``: ``overrides`` is
    ``{"kernel": {...}, "generator": {...}}`` (only the sections that got a key), to merge
    like a config file's sections; ``warnings`` names each key that means nothing here, as
    ``<where><key>: ...``. CoreC's own keys (``enabled``, ``path``, ``bloque``) are ignored
    without a warning, and so are the top-level keys listed in ``keep`` (those the caller
    handles itself, e.g. the CoreC adapter's ``config_file`` and ``kernel``). Values are not
    validated here: the kernel and the processors validate them as any config value.
    """
    overrides: dict[str, Any] = {}
    warnings: list[str] = []
    skip = set(keep)

    def walk(mapping: Mapping[str, Any], prefix: str) -> None:
        for key, value in mapping.items():
            if key in COREC_KEY_MAP:
                name, field = COREC_KEY_MAP[key]
                target = overrides.setdefault(name, {})
                target[field] = _merge({}, value) if isinstance(value, Mapping) else value
            elif key in COREC_IGNORED_KEYS or (not prefix and key in skip):
                continue
            elif key == CODEX_SECTION and not prefix:
                continue  # walked last, so its keys win
            else:
                warnings.append(
                    f"{where}{prefix}{key}: not a key of a CoreC plugin section or of codex's "
                    f"config ({', '.join(sorted(COREC_KEY_MAP))}); ignored"
                )

    walk(section, "")
    codex = section.get(CODEX_SECTION)
    if codex is not None and CODEX_SECTION not in skip:
        if isinstance(codex, Mapping):
            walk(codex, f"{CODEX_SECTION}.")
        else:
            warnings.append(f"{where}{CODEX_SECTION}: must be an object of codex settings; ignored")
    return overrides, warnings


def is_corec_file(data: Mapping[str, Any]) -> bool:
    """Is this config file codex's / a CoreC plugin's ``config.json`` (a top-level ``codex``
    section, or ``PluginConfig`` keys at the top level) rather than a corec-kit file?"""
    return CODEX_SECTION in data or any(key in COREC_KEY_MAP for key in data)


def _from_corec_file(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A codex-style file as corec-kit sections; the file's own ``kernel``, ``generator``...
    sections win over what the mapping sets. Its other top-level objects are sections as in
    any file; its other top-level values (not objects, so no section) are warnings."""
    if not is_corec_file(data):
        return data, []
    corec = {
        key: value
        for key, value in data.items()
        if key in COREC_KEY_MAP
        or key in COREC_IGNORED_KEYS
        or key == CODEX_SECTION
        or not isinstance(value, Mapping)
    }
    rest = {key: value for key, value in data.items() if key not in corec}
    overrides, warnings = from_corec_section(corec)
    return _merge(overrides, rest), warnings


def strict_from_env() -> bool:
    value = os.environ.get("COREC_STRICT_PROCESSORS", "").strip().lower()
    return value in {"1", "true", "yes", "on"}


class Settings:
    """The loaded configuration: the kernel section plus each processor's validated section.

    ``warnings`` lists keys of a CoreC/codex-style file that mean nothing here (see
    :func:`from_corec_section`); with ``strict_processors`` they are ``problems`` instead.
    """

    def __init__(
        self,
        kernel: KernelConfig,
        sections: Mapping[str, Any] | None = None,
        source: Path | None = None,
    ) -> None:
        self.kernel = kernel
        self.raw_sections: dict[str, Any] = dict(sections or {})
        self.processors: dict[str, BaseModel | None] = {}
        self.source = source
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def validate_processors(self, models: Mapping[str, type[BaseModel] | None]) -> list[str]:
        """Validate each processor's section; returns problems as ``section.key: message``."""
        problems: list[str] = []
        for name, model in models.items():
            raw = self.raw_sections.get(name, {})
            if model is None:
                self.processors[name] = None
                continue
            try:
                self.processors[name] = model.model_validate(raw)
            except ValidationError as exc:
                problems.extend(format_validation_error(exc, prefix=name))
        return problems

    def section_warnings(self, installed: Iterable[str]) -> list[str]:
        """What the config sets that has no effect: sections that name no installed processor,
        and what each validated section's model reports in ``config_warnings()`` (e.g. a
        folder that does not exist), as ``section.key: message``."""
        known = set(installed)
        out = []
        for name in sorted(self.raw_sections):
            if name not in known:
                names = ", ".join(sorted(known)) or "none"
                out.append(
                    f"{name}: this section names no installed processor (installed: {names}), "
                    "so nothing reads it; a processor's settings go in a section named after "
                    "it (docs/configuration.md)"
                )
        for name, model in self.processors.items():
            report = getattr(model, "config_warnings", None)
            if callable(report):
                out += [f"{name}.{warning}" for warning in report()]
        return out


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """``section.key.sub: message`` lines, one per problem."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in (prefix, *err["loc"]) if part != "")
        lines.append(f"{loc or prefix or '<root>'}: {err['msg']}")
    return lines


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to read, or ``None`` when there is none (defaults apply)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("COREC_CONFIG")
    if env:
        return Path(env)
    for name in ("corec.json", "corec.toml"):
        if Path(name).is_file():
            return Path(name)
    return None


def read_file(path: Path) -> dict[str, Any]:
    """Parse a JSON or TOML config file into a dict (by extension; JSON when unknown)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read config {path}: {exc.strerror or exc}; "
            "pass --config PATH or unset COREC_CONFIG"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not UTF-8 text") from None
    try:
        if path.suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib

                data: Any = tomllib.loads(text)
            else:  # pragma: no cover - 3.10 only
                import tomli  # type: ignore[import-not-found, unused-ignore]

                data = tomli.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        kind = path.suffix.lstrip(".").upper() or "JSON"
        raise ConfigError(f"config {path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold an object of sections (kernel, <processor>...)")
    return data


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested dict of the ``COREC_*`` overrides found in ``environ``."""
    out: dict[str, Any] = {}
    kernel_keys = set(KernelConfig.model_fields)
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        if rest in _NOT_KEYS or not rest:
            continue
        if "__" in rest:
            path = [part.lower() for part in rest.split("__")]
        elif rest.lower() in kernel_keys:
            path = ["kernel", rest.lower()]
        else:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = _parse_env_value(value)
    return out


def _parse_env_value(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, Mapping):
            base[key] = _merge({}, value)  # a copy: later merges must not edit the caller's dict
        else:
            base[key] = value
    return base


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the file, apply env and explicit overrides, validate the kernel section.

    Problems are collected in ``settings.problems``, not raised: processor sections are validated
    later by :meth:`Settings.validate_processors`, once the processors' models are known, and
    :class:`~corec_plugin_kit.kernel.Kernel` raises every problem together.
    """
    source = find_config(path)
    data: dict[str, Any] = read_file(source) if source else {}
    data, warnings = _from_corec_file(data)
    _merge(data, env_overrides(os.environ if environ is None else environ))
    if overrides:
        _merge(data, overrides)
    kernel_raw = data.pop("kernel", {})
    if not isinstance(kernel_raw, dict):
        raise ConfigError("config section `kernel` must be an object")
    problems: list[str] = []
    try:
        kernel = KernelConfig.model_validate(kernel_raw)
    except ValidationError as exc:
        problems = format_validation_error(exc, "kernel")
        # Keep going with the keys that are valid, so the processors' sections get checked too
        # and every problem is reported at once.
        bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
        kernel = KernelConfig.model_validate({k: v for k, v in kernel_raw.items() if k not in bad})
    if warnings and (kernel.strict_processors or strict_from_env()):
        problems += warnings
        warnings = []
    for warning in warnings:
        log.warning("config %s: %s", source, warning)
    settings = Settings(kernel, data, source)
    settings.problems = problems
    settings.warnings = warnings
    return settings


def raise_problems(problems: list[str]) -> None:
    """Raise one :class:`ConfigError` listing every problem (no-op when there are none)."""
    if problems:
        raise ConfigError(
            f"invalid configuration ({len(problems)} problem{'s' if len(problems) > 1 else ''}): "
            + "; ".join(problems),
            details=problems,
        )
