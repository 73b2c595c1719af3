"""``corec-kit check``: configuration, processors, Redis and the database, each reported.

The command (``corec_plugin_kit.cli.check``) builds the kernel from its options and passes it
here; a kernel that does not build is a config failure (:func:`config_failure`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    EXIT_DATABASE_UNAVAILABLE,
    EXIT_PROCESSOR_ERROR,
    EXIT_REDIS_UNAVAILABLE,
    CorecError,
)

if TYPE_CHECKING:
    from .config import KernelConfig
    from .kernel import Kernel

#: ``{check: {"ok": bool, "detail": str, ...}}``, in the order the checks ran.
Report = dict[str, dict[str, Any]]


def config_failure(exc: CorecError) -> tuple[Report, int]:
    """The report and exit code when the kernel does not build: config (or processors under
    ``--strict``) refused with ``exc``; nothing else is checked."""
    return {"config": {"ok": False, "detail": exc.message}}, exc.exit_code


async def run_checks(kernel: Kernel, *, strict: bool = False) -> tuple[Report, int]:
    """Check a built kernel: return ``{check: {ok, detail}}`` and the exit code of the first
    failure (0 if none). ``strict``: a processor that failed to load fails the check (exit 4)."""
    report: Report = {"config": _config_entry(kernel)}
    report["processors"], failed = _processors_entry(kernel)
    cfg = kernel.settings.kernel
    report["redis"] = await _redis_entry(cfg)
    exit_code = 0 if report["redis"]["ok"] else EXIT_REDIS_UNAVAILABLE
    report["database"] = await _database_entry(cfg)
    if not report["database"]["ok"]:
        exit_code = exit_code or EXIT_DATABASE_UNAVAILABLE
    if failed and not exit_code and strict:
        exit_code = EXIT_PROCESSOR_ERROR
    return report, exit_code


def _config_entry(kernel: Kernel) -> dict[str, Any]:
    source = kernel.settings.source
    entry: dict[str, Any] = {"ok": True, "detail": f"valid ({source or 'defaults, no file'})"}
    warnings = kernel.settings.warnings
    if warnings:
        # Keys of a CoreC/codex-style config that mean nothing here (errors with --strict).
        entry["detail"] += f"; {len(warnings)} warning(s): " + "; ".join(warnings)
        entry["warnings"] = warnings
    return entry


def _processors_entry(kernel: Kernel) -> tuple[dict[str, Any], list[str]]:
    """The processors' entry, and ``name: reason`` of each that failed to load."""
    infos = kernel.processors.infos.values()
    failed = [f"{i.name}: {i.reason}" for i in infos if i.status == "failed"]
    loaded = sorted(i.name for i in infos if i.status == "loaded")
    entry = {
        "ok": not failed,
        "detail": f"loaded {', '.join(loaded) or 'none'}"
        + (f"; failed {'; '.join(failed)}" if failed else "")
        + f"; {len(kernel.routing)} actions routed",
    }
    return entry, failed


async def _redis_entry(cfg: KernelConfig) -> dict[str, Any]:
    from redis.exceptions import ResponseError

    from .runtime.connection import RedisHandle

    handle: RedisHandle | None = None
    try:
        handle = RedisHandle(cfg)
        redis = await handle.connect()
        try:
            info = await redis.info("server")
        except ResponseError:  # an ACL user without +info (a producer, say): PING answered
            return {
                "ok": True,
                "detail": f"{handle.display} answers (server version hidden: this user may "
                "not run INFO)",
            }
        version = info.get("valkey_version") or info.get("redis_version") or "?"
        return {"ok": True, "detail": f"{handle.display} answers (server {version})"}
    except CorecError as exc:
        return {"ok": False, "detail": exc.message}
    finally:
        if handle is not None:
            await handle.close()


async def _database_entry(cfg: KernelConfig) -> dict[str, Any]:
    if not cfg.records:
        return {"ok": True, "detail": "records are off (kernel.records=false)"}
    from .storage import check_database

    try:
        ok, detail = await check_database(cfg)
    except CorecError as exc:
        ok, detail = False, exc.message
    return {"ok": ok, "detail": detail}
