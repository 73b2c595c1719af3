"""From ``kernel.database_url`` to a store: which back-end, which file or server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, CorecError
from ..redaction import redact, redact_url
from ._base import SCHEMA_VERSION, RecordStore

if TYPE_CHECKING:
    from ..config import KernelConfig

ACCEPTED = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "postgresql://user:password@host:5432/dbname (or postgres://), "
    "or no database_url at all for SQLite at <state_dir>/corec.db"
)


def sqlite_path(url: str) -> Path:
    """File of a ``sqlite:///`` URL: three slashes then a relative path, four for absolute."""
    rest = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
    if not rest:
        raise ConfigError(
            f"database_url {redact_url(url)!r} names no file: write sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db (in-memory SQLite would lose every record)"
        )
    return Path(rest)


def open_store(kernel_config: KernelConfig) -> RecordStore:
    """The record store ``kernel_config`` names, not yet opened (call ``await store.open()``).

    Raises :class:`~corec_plugin_kit.errors.ConfigError` for a URL of another kind.
    """
    secret = kernel_config.database_url
    if secret is None:
        from ._sqlite import SQLiteStore

        return SQLiteStore(Path(kernel_config.state_dir) / "corec.db")
    url = secret.get_secret_value().strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from ._sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        from ._postgres import PostgresStore

        # SQLAlchemy-style driver suffix: asyncpg itself only knows the two plain schemes.
        return PostgresStore("postgresql" + url[len(scheme) :])
    shown = f"{scheme}://..." if scheme else "a value without a scheme"
    raise ConfigError(f"kernel.database_url is {shown}; accepted: {ACCEPTED}")


async def check_database(kernel_config: KernelConfig) -> tuple[bool, str]:
    """``(ok, detail)`` for ``corec-kit check``: reach the database, read its schema version.

    Creates and migrates nothing (``corec-kit run`` does that), so checking is side-effect free.
    """
    try:
        store = open_store(kernel_config)
    except CorecError as exc:
        return False, exc.message
    try:
        server = await store.server_version()
        version = await store.schema_version()
    except CorecError as exc:
        return False, exc.message
    except Exception as exc:  # noqa: BLE001 - a check reports every failure as one line
        return False, redact(f"{store.url_display}: {type(exc).__name__}: {exc}")
    finally:
        await store.close()
    if version is None:
        schema = f"no schema yet (`corec-kit run` creates v{SCHEMA_VERSION})"
    elif version > SCHEMA_VERSION:
        return False, (
            f"{store.url_display} has schema v{version}, newer than the v{SCHEMA_VERSION} this "
            "corec-plugin-kit knows: upgrade corec-plugin-kit"
        )
    elif version < SCHEMA_VERSION:
        schema = f"schema v{version} (`corec-kit run` migrates it to v{SCHEMA_VERSION})"
    else:
        schema = f"schema v{version}"
    return True, f"{store.url_display} answers ({server}); {schema}"
