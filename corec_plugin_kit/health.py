"""``corec-kit check``: configuration, processors, Redis and the database, each reported."""

from __future__ import annotations

from typing import Any

from .errors import (
    EXIT_DATABASE_UNAVAILABLE,
    EXIT_PROCESSOR_ERROR,
    EXIT_REDIS_UNAVAILABLE,
    CorecError,
)


async def run_checks(state: Any) -> tuple[dict[str, dict[str, Any]], int]:
    """Return ``{check: {ok, detail}}`` and the exit code of the first failure (0 if none)."""
    report: dict[str, dict[str, Any]] = {}
    try:
        kernel = state.kernel()
    except CorecError as exc:
        report["config"] = {"ok": False, "detail": exc.message}
        return report, exc.exit_code
    source = kernel.settings.source
    report["config"] = {"ok": True, "detail": f"valid ({source or 'defaults, no file'})"}
    infos = kernel.processors.infos.values()
    failed = [f"{i.name}: {i.reason}" for i in infos if i.status == "failed"]
    loaded = sorted(i.name for i in infos if i.status == "loaded")
    report["processors"] = {
        "ok": not failed,
        "detail": f"loaded {', '.join(loaded) or 'none'}"
        + (f"; failed {'; '.join(failed)}" if failed else "")
        + f"; {len(kernel.routing)} actions routed",
    }
    exit_code = 0
    from .runtime.connection import RedisHandle

    cfg = kernel.settings.kernel
    handle: RedisHandle | None = None
    try:
        handle = RedisHandle(cfg)
        redis = await handle.connect()
        info = await redis.info("server")
        version = info.get("valkey_version") or info.get("redis_version") or "?"
        report["redis"] = {"ok": True, "detail": f"{handle.display} answers (server {version})"}
    except CorecError as exc:
        report["redis"] = {"ok": False, "detail": exc.message}
        exit_code = exit_code or EXIT_REDIS_UNAVAILABLE
    finally:
        if handle is not None:
            await handle.close()
    if not cfg.records:
        report["database"] = {"ok": True, "detail": "records are off (kernel.records=false)"}
    else:
        from .storage import check_database

        try:
            ok, detail = await check_database(cfg)
        except CorecError as exc:
            ok, detail = False, exc.message
        report["database"] = {"ok": ok, "detail": detail}
        if not ok:
            exit_code = exit_code or EXIT_DATABASE_UNAVAILABLE
    if failed and not exit_code and state.strict:
        exit_code = EXIT_PROCESSOR_ERROR
    return report, exit_code
