"""The processor manager: load order, allow/deny lists, strict mode, tracing, isolation."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from kernel_procs import Greet, Sleep, blocking_sleep, fake_distribution, greet, greeter, processor

from corec_plugin_kit import CorecError, ProcessorError, ProcessorManager
from corec_plugin_kit.kernel import Kernel, manager_for
from corec_plugin_kit.plugins import ProcessorInfo


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path where tests write fake installed distributions."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    for name in list(__import__("os").environ):
        if name.startswith("COREC_"):
            monkeypatch.delenv(name)
    return folder


GOOD = """
from corec_plugin_kit import hookimpl

async def hi(params, ctx):
    return {"from": __name__}

@hookimpl
def corec_register_actions(register):
    register("hi_" + __name__, hi)
"""


def test_registered_processor_is_loaded_with_its_actions(corec_register: Any) -> None:
    info = corec_register(greeter(), name="greeter", distribution="corec-greeter", version="2.0")
    assert isinstance(info, ProcessorInfo)
    assert info.as_dict() == {
        "name": "greeter",
        "distribution": "corec-greeter",
        "version": "2.0",
        "status": "loaded",
        "reason": None,
        "actions": ["greet"],
        "module": "kernel_procs.InTestProcessor",
    }


def test_unhashable_processor_object_is_failed(corec_register: Any) -> None:
    from types import SimpleNamespace

    info = corec_register(SimpleNamespace(corec_cli=None), name="ns")
    assert info.status == "failed"
    assert "must be hashable" in (info.reason or "")


def test_same_name_twice_is_refused(corec_register: Any) -> None:
    corec_register(greeter(), name="greeter")
    with pytest.raises(ProcessorError, match="already registered"):
        corec_register(greeter("other"), name="greeter")


def test_load_order_code_first_then_entry_points_sorted(site: Path) -> None:
    for module in ("zeta_proc", "alpha_proc", "mid_proc"):
        fake_distribution(site, module.replace("_", "-"), module, module, GOOD)
    pm = ProcessorManager(trace=False)
    pm.register(greeter(), "in_code")
    pm.load()
    names = [
        name for name in pm.infos if name in {"in_code", "alpha_proc", "mid_proc", "zeta_proc"}
    ]
    assert names == ["in_code", "alpha_proc", "mid_proc", "zeta_proc"]
    assert pm.infos["alpha_proc"].distribution == "alpha-proc"
    assert pm.infos["alpha_proc"].version == "1.0"
    assert pm.infos["alpha_proc"].actions == ["hi_alpha_proc"]
    routing = pm.routing()
    assert routing.route("hi_zeta_proc").processor == "zeta_proc"
    pm.load()  # a second call loads nothing twice
    assert len(pm.routing()) == len(routing)


def test_entry_point_that_fails_to_import_is_failed_and_others_load(site: Path) -> None:
    fake_distribution(
        site, "corec-broken", "broken_proc", "broken", "raise ImportError('no numpy')"
    )
    fake_distribution(site, "corec-fine", "fine_proc", "fine", GOOD)
    pm = ProcessorManager(trace=False)
    pm.load()
    broken = pm.infos["broken"]
    assert broken.status == "failed"
    assert broken.distribution == "corec-broken"
    assert broken.reason == "import of broken_proc failed: ImportError: no numpy"
    assert broken.actions == []
    assert pm.infos["fine"].status == "loaded"
    assert "hi_fine_proc" in pm.routing()


def test_strict_mode_makes_a_failed_import_fatal(site: Path) -> None:
    fake_distribution(site, "corec-broken", "broken_proc2", "broken", "1/0")
    pm = ProcessorManager(trace=False, strict=True)
    with pytest.raises(ProcessorError, match="strict mode") as caught:
        pm.load()
    assert caught.value.exit_code == 4
    assert "ZeroDivisionError" in caught.value.message
    assert caught.value.details["distribution"] == "corec-broken"


def test_strict_from_environment_and_config(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_distribution(site, "corec-broken", "broken_proc3", "broken", "1/0")
    monkeypatch.setenv("COREC_STRICT_PROCESSORS", "1")
    with pytest.raises(ProcessorError):
        Kernel.build(None, overrides={"kernel": {"state_dir": str(site)}})
    monkeypatch.delenv("COREC_STRICT_PROCESSORS")
    with pytest.raises(ProcessorError):
        Kernel.build(None, overrides={"kernel": {"strict_processors": True}})
    kernel = Kernel.build(None)  # not strict: the broken one is only listed
    assert kernel.processors.infos["broken"].status == "failed"


def test_unknown_hook_is_failed(corec_register: Any) -> None:
    def corec_register_action(register: Any) -> None:  # typo of corec_register_actions
        raise AssertionError("never called")

    info = corec_register(processor(corec_register_action=corec_register_action), name="typo")
    assert info.status == "failed"
    assert info.reason is not None
    assert "unknown hook(s) corec_register_action" in info.reason
    assert "corec_register_actions" in info.reason  # lists the known hooks


def test_raise_at_registration_is_failed(corec_register: Any, corec_processors: Any) -> None:
    def corec_register_actions(register: Any) -> None:
        register("fine_first", greet, Greet)
        raise RuntimeError("config missing")

    info = corec_register(processor(corec_register_actions=corec_register_actions), name="raiser")
    assert info.status == "failed"
    assert info.reason == "corec_register_actions raised RuntimeError: config missing"
    # Nothing of a failed registration reaches the routing table, not even the first claim.
    assert "fine_first" not in corec_processors.routing()


def test_sync_handler_without_blocking_is_failed(corec_register: Any) -> None:
    def sync_handler(params: Any, ctx: Any) -> None:
        return None

    def corec_register_actions(register: Any) -> None:
        register("sync", sync_handler)

    info = corec_register(processor(corec_register_actions=corec_register_actions), name="sync")
    assert info.status == "failed"
    assert "must be `async def`" in (info.reason or "")
    assert "blocking=True" in (info.reason or "")


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("Bad Name", greet, Greet), {}, "lower-case identifiers"),
        (
            ("ok", blocking_sleep, Sleep),
            {"timeout_s": 0, "blocking": True},
            "timeout_s must be positive",
        ),
        (("ok", greet, dict), {}, "pydantic BaseModel subclass"),
        (("ok", greet, Greet), {"blocking": True}, "give a plain `def` handler"),
    ],
)
def test_bad_registrations(corec_register: Any, args: tuple, kwargs: dict, message: str) -> None:
    def corec_register_actions(register: Any) -> None:
        register(*args, **kwargs)

    info = corec_register(processor(corec_register_actions=corec_register_actions), name="bad")
    assert info.status == "failed"
    assert message in (info.reason or "")


def test_registering_one_action_twice_is_failed(corec_register: Any) -> None:
    def corec_register_actions(register: Any) -> None:
        register("twice", greet, Greet)
        register("twice", greet, Greet)

    info = corec_register(processor(corec_register_actions=corec_register_actions), name="dup")
    assert "registered twice" in (info.reason or "")


def test_strict_registration_failure_raises(site: Path) -> None:
    pm = ProcessorManager(entry_points=False, strict=True, trace=False)

    def corec_register_actions(register: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(ProcessorError, match="boom"):
        pm.register(processor(corec_register_actions=corec_register_actions), "boomer")


def test_allow_and_deny_lists_by_argument() -> None:
    pm = ProcessorManager(entry_points=False, allow=["a", "b"], deny=["b"], trace=False)
    infos = {name: pm.register(greeter(f"act_{name}"), name) for name in ("a", "b", "c")}
    assert infos["a"].status == "loaded"
    assert infos["b"].status == "disabled"
    assert "blocklist" in (infos["b"].reason or "")
    assert infos["c"].status == "disabled"
    assert "allowlist" in (infos["c"].reason or "")
    assert list(pm.routing()) == ["act_a"]


def test_allow_and_deny_from_env_flags_and_config(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("one_proc", "two_proc", "three_proc"):
        fake_distribution(site, module.replace("_", "-"), module, module, GOOD)

    def statuses(pm: ProcessorManager) -> dict[str, str]:
        pm.load()
        return {
            n: i.status for n, i in pm.infos.items() if n in {"one_proc", "two_proc", "three_proc"}
        }

    monkeypatch.setenv("COREC_LOAD_PROCESSORS", "one_proc, two_proc")
    monkeypatch.setenv("COREC_DISABLE_PROCESSORS", "two_proc")
    assert statuses(manager_for(None)) == {
        "one_proc": "loaded",
        "two_proc": "disabled",
        "three_proc": "disabled",
    }
    # Flags win over the environment for the allowlist; blocklists add up.
    assert statuses(manager_for(None, load=["three_proc", "two_proc"])) == {
        "one_proc": "disabled",
        "two_proc": "disabled",
        "three_proc": "loaded",
    }
    monkeypatch.delenv("COREC_LOAD_PROCESSORS")
    monkeypatch.delenv("COREC_DISABLE_PROCESSORS")
    kernel = Kernel.build(
        None,
        overrides={
            "kernel": {"load_processors": "one_proc,three_proc", "disable_processors": ["one_proc"]}
        },
    )
    assert statuses(kernel.processors) == {
        "one_proc": "disabled",
        "two_proc": "disabled",
        "three_proc": "loaded",
    }
    kernel = Kernel.build(None, disable=["three_proc"])
    assert statuses(kernel.processors)["three_proc"] == "disabled"
    assert "hi_three_proc" not in kernel.routing


def test_plugins_module_from_environment(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (site / "dev_proc.py").write_text(GOOD)
    (site / "dev_broken.py").write_text("raise RuntimeError('half written')")
    monkeypatch.setenv("COREC_PLUGINS", "dev_proc,renamed=dev_broken")
    pm = manager_for(None)
    pm.load()
    assert pm.infos["dev_proc"].status == "loaded"
    assert pm.infos["dev_proc"].distribution is None
    assert pm.infos["renamed"].status == "failed"
    assert "RuntimeError: half written" in (pm.infos["renamed"].reason or "")


def test_trace_hooks_writes_every_hook_call(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COREC_TRACE_HOOKS", "1")
    pm = ProcessorManager(entry_points=False)
    pm.register(greeter(), "greeter")
    pm.config_models()
    err = capsys.readouterr().err
    assert "[corec-hooks]" in err
    assert "corec_register_actions" in err
    assert "corec_config_model" in err


def test_no_trace_by_default(corec_register: Any, capsys: pytest.CaptureFixture[str]) -> None:
    corec_register(greeter(), name="greeter")
    assert "[corec-hooks]" not in capsys.readouterr().err


async def test_startup_failure_marks_failed_and_unroutes(
    corec_register: Any, corec_kernel: Any
) -> None:
    calls: list[str] = []

    def corec_register_actions(register: Any) -> None:
        register("doomed", greet, Greet)

    async def corec_startup(kernel: Any) -> None:
        calls.append("startup")
        raise ProcessorError("the model file is missing")

    def corec_shutdown(kernel: Any) -> None:
        calls.append("shutdown-ok")

    corec_register(
        processor(corec_register_actions=corec_register_actions, corec_startup=corec_startup),
        name="doomed",
    )
    corec_register(
        processor(
            corec_register_actions=greeter().corec_register_actions, corec_shutdown=corec_shutdown
        ),
        name="fine",
    )
    kernel = corec_kernel()
    assert "doomed" in kernel.routing
    async with kernel:
        info = kernel.processors.infos["doomed"]
        assert info.status == "failed"
        assert info.reason == "corec_startup raised ProcessorError: the model file is missing"
        result = await kernel.execute({"action": "doomed", "params": {"name": "x"}})
        assert result["error"]["type"] == "unknown_action"
    assert calls == ["startup", "shutdown-ok"]


async def test_lifecycle_hooks_sync_and_async_in_order(
    corec_register: Any, corec_kernel: Any
) -> None:
    calls: list[str] = []

    def make(name: str) -> Any:
        async def corec_startup(kernel: Any) -> None:
            calls.append(f"start {name}")

        def corec_shutdown(kernel: Any) -> None:
            calls.append(f"stop {name}")

        return processor(corec_startup=corec_startup, corec_shutdown=corec_shutdown)

    def failing_shutdown(kernel: Any) -> None:
        calls.append("stop bad")
        raise RuntimeError("ignored")

    corec_register(make("a"), name="a")
    corec_register(processor(corec_shutdown=failing_shutdown), name="bad")
    corec_register(make("b"), name="b")
    kernel = corec_kernel()
    async with kernel:
        await kernel.start()  # idempotent
    await kernel.stop()  # idempotent
    assert calls == ["start a", "start b", "stop b", "stop bad", "stop a"]


async def test_blocking_handler_runs_in_a_thread_off_the_loop(
    corec_register: Any, corec_kernel: Any
) -> None:
    def corec_register_actions(register: Any) -> None:
        register("block", blocking_sleep, Sleep, blocking=True)

    corec_register(processor(corec_register_actions=corec_register_actions), name="blocker")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async with corec_kernel() as kernel:
        task = asyncio.create_task(ticker())
        result = await kernel.execute({"action": "block", "params": {"seconds": 0.3}})
        task.cancel()
    assert result["status"] == "ok"
    assert result["result"]["thread"].startswith("corec-blocking")
    assert result["result"]["thread"] != threading.current_thread().name
    # The loop kept running while the handler slept in its thread.
    assert ticks >= 10


def test_cli_hook_only_for_loaded_processor(corec_processors: ProcessorManager) -> None:
    import click

    seen: list[str] = []

    def corec_cli(group: click.Group) -> None:
        seen.append(group.name or "")

    corec_processors.register(processor(corec_cli=corec_cli), "tool")
    assert corec_processors.add_cli("tool", click.Group("tool")) is True
    assert corec_processors.add_cli("absent", click.Group("absent")) is False
    assert seen == ["tool"]


def test_config_model_raising_marks_failed(corec_processors: ProcessorManager) -> None:
    def corec_config_model() -> Any:
        raise LookupError("no schema")

    corec_processors.register(processor(corec_config_model=corec_config_model), "cfg")
    assert corec_processors.config_models() == {}
    assert corec_processors.infos["cfg"].status == "failed"
    assert "LookupError: no schema" in (corec_processors.infos["cfg"].reason or "")


def test_errors_are_corec_errors() -> None:
    assert issubclass(ProcessorError, CorecError)
    assert sys.modules["corec_plugin_kit.plugins"].ENTRY_POINT_GROUP == "corec.processors"
