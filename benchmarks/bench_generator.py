"""Benchmark: ``generate_plugin`` in-process against its floor and against cookiecutter.

Three ways to produce the same plugin project (same files, same bytes), each timed per project
(p50 and p90 over many runs, after a warm-up):

* **floor**: a plain, warm Jinja2 environment rendering the same templates and writing the files
  with ``open()``: the least any Jinja2 generator can cost;
* **generate_plugin**: the real action, through the kernel's dispatch (params validation, the
  cached sandboxed environment, containment checks, exclusive creation, the answers file);
* **cookiecutter**: the same template, converted to cookiecutter's layout at start-up.

Run: ``python benchmarks/bench_generator.py [--runs N]``. Target: generate_plugin <= 2.5x floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from corec_generator import processor as generator
from corec_generator.engine import ANSWERS_FILE, TemplateSet, answers_document
from corec_generator.processor import GeneratePluginParams, GeneratorConfig, plugin_job

from corec_plugin_kit import Kernel, ProcessorManager

TARGET = 2.5


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.9) - 1]


def timed(fn: Callable[[int], Any], runs: int, warmup: int) -> list[float]:
    for i in range(warmup):
        fn(-1 - i)
    samples = []
    for i in range(runs):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def timed_pair(
    a: Callable[[int], Any], b: Callable[[int], Any], runs: int, warmup: int
) -> tuple[list[float], list[float]]:
    for i in range(warmup):
        a(-1 - i)
        b(-1 - i)
    sa, sb = [], []
    for i in range(runs):
        start = time.perf_counter()
        a(i)
        mid = time.perf_counter()
        b(i)
        sa.append((mid - start) * 1000)
        sb.append((time.perf_counter() - mid) * 1000)
    return sa, sb


def floor_renderer(tset: TemplateSet, context: dict[str, Any], out: Path) -> Callable[[int], Any]:
    """Plain warm Jinja2: same templates, same options, write with open()."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(tset.root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - renders Python/TOML/Markdown, not HTML
    )
    planned = tset.render(context)
    entries = {"/".join(e.dest).replace("{{package}}", context["package"]): e for e in tset.entries}
    files = []
    for item in planned:
        entry = entries[item.path]
        tpl = env.get_template(entry.src) if entry.render else None
        raw = None if entry.render else (tset.root / entry.src).read_bytes()
        files.append((item.path, tpl, raw))
    answers = answers_document_for(context)
    folders = sorted({str(Path(rel).parent) for rel, _, _ in files})

    def run(i: int) -> None:
        # As lean as a generator can be: each folder made once, each file opened once.
        project = os.path.join(out, f"f{i}", context["plugin_name"])
        for folder in folders:
            os.makedirs(os.path.join(project, folder), exist_ok=True)
        for rel, tpl, raw in files:
            data = tpl.render(context).encode() if tpl is not None else raw or b""
            with open(os.path.join(project, rel), "wb") as fh:
                fh.write(data)
        with open(os.path.join(project, ANSWERS_FILE), "wb") as fh:
            fh.write(answers)

    return run


def answers_document_for(context: dict[str, Any]) -> bytes:
    job = plugin_job(
        GeneratePluginParams(plugin_name=context["plugin_name"]), GeneratorConfig(), Path("."), []
    )
    return answers_document(job)


def action_runner(out: Path) -> tuple[Callable[[int], Any], Callable[[], None]]:
    """The real action through Kernel.execute (one long-lived kernel and event loop)."""
    manager = ProcessorManager(entry_points=False, trace=False)
    manager.register(generator, "generator")
    kernel = Kernel.build(
        None,
        processors=manager,
        overrides={
            "kernel": {"state_dir": str(out / "state"), "metrics_port": 0},
            "generator": {"output_plugins": str(out)},
        },
    )
    loop = asyncio.new_event_loop()
    loop.run_until_complete(kernel.start())

    def run(i: int) -> None:
        command = {
            "action": "generate_plugin",
            "params": {"plugin_name": "bench_plugin", "output": f"g{i + 1000}"},
        }
        envelope = loop.run_until_complete(kernel.execute(command))
        if envelope["status"] != "ok":
            raise SystemExit(f"generate_plugin failed: {envelope['error']}")

    def close() -> None:
        loop.run_until_complete(kernel.stop())
        loop.close()

    return run, close


_JINJA_BLOCK = re.compile(r"(\{\{|\{%)(.*?)(\}\}|%\})", re.DOTALL)


def cookiecutter_template(tset: TemplateSet, context: dict[str, Any], dest: Path) -> Path:
    """The plugin template in cookiecutter's layout: answers under ``cookiecutter.``."""
    keys = sorted(context, key=len, reverse=True)
    ident = re.compile(r"(?<![\w.|'\"])(" + "|".join(map(re.escape, keys)) + r")(?![\w'\"])")

    def convert(text: str) -> str:
        return _JINJA_BLOCK.sub(
            lambda m: m.group(1) + ident.sub(r"cookiecutter.\1", m.group(2)) + m.group(3), text
        )

    root = dest / "cc-plugin"
    project = root / "{{cookiecutter.plugin_name}}"
    for entry in tset.entries:
        rel = "/".join(entry.dest).replace("{{package}}", "{{cookiecutter.package}}")
        target = project / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tset.root / entry.src
        target.write_text(convert(source.read_text()))
    cc_context = {k: v for k, v in context.items() if not isinstance(v, (list, dict))}
    (root / "cookiecutter.json").write_text(json.dumps(cc_context))
    # cookiecutter's own project-level options: same whitespace handling as ours
    (root / "cookiecutter.json").write_text(
        json.dumps({**cc_context, "_jinja2_env_vars": {"lstrip_blocks": True, "trim_blocks": True}})
    )
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--cookiecutter-runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    job = plugin_job(
        GeneratePluginParams(plugin_name="bench_plugin"), GeneratorConfig(), Path("."), []
    )
    context = job.context
    tmp = Path(tempfile.mkdtemp(prefix="bench-generator-"))
    rows: list[tuple[str, float, float]] = []
    try:
        floor = floor_renderer(job.tset, context, tmp / "floor")
        action, close = action_runner(tmp / "action")
        try:
            # Interleaved, so load from anything else on the machine hits both alike.
            floor_ms, action_ms = timed_pair(floor, action, args.runs, args.warmup)
        finally:
            close()
        rows.append(("floor (plain warm Jinja2)", *percentiles(floor_ms)))
        rows.append(("generate_plugin (in-process)", *percentiles(action_ms)))
        same = compare(
            tmp / "floor" / "f0" / "bench_plugin", tmp / "action" / "g1000" / "bench_plugin"
        )
        cc_same = cookiecutter_row(job, context, tmp, rows, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    files = len(job.tset.render(context)) + 1
    floor_p50 = rows[0][1]
    print(f"\nplugin template: {files} files; p50/p90 in ms per generated project\n")
    print(f"{'':32} {'p50 ms':>8} {'p90 ms':>8} {'x floor':>8}")
    for name, p50, p90 in rows:
        print(f"{name:32} {p50:8.2f} {p90:8.2f} {p50 / floor_p50:8.2f}")
    ratio = rows[1][1] / floor_p50
    print(f"\nfloor and generate_plugin outputs identical: {same}")
    verdict = "OK" if ratio <= TARGET else "OVER TARGET"
    print(f"generate_plugin / floor = {ratio:.2f} (target <= {TARGET}): {verdict}")
    return 0 if ratio <= TARGET and same and cc_same else 1


def cookiecutter_row(
    job: Any, context: dict[str, Any], tmp: Path, rows: list[tuple[str, float, float]], args: Any
) -> bool:
    """Time cookiecutter on the same template (a row of ``rows``); is its output ours?"""
    try:
        from cookiecutter.main import cookiecutter
    except ImportError:
        print("cookiecutter is not installed: pip install cookiecutter (row skipped)")
        return True
    template = cookiecutter_template(job.tset, context, tmp)

    def cc(i: int) -> None:
        cookiecutter(
            str(template),
            no_input=True,
            output_dir=str(tmp / "cc" / f"c{i + 1000}"),
            default_config=True,
        )

    rows.append(("cookiecutter", *percentiles(timed(cc, args.cookiecutter_runs, args.warmup // 4))))
    same = compare(
        tmp / "floor" / "f0" / "bench_plugin",
        tmp / "cc" / "c1000" / "bench_plugin",
        ignore={ANSWERS_FILE},
    )
    print(f"cookiecutter output identical to ours (bar the answers file): {same}")
    return same


def compare(a: Path, b: Path, ignore: set[str] | None = None) -> bool:
    ignore = ignore or set()
    fa = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()} - ignore
    fb = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()} - ignore
    if fa != fb:
        print(f"  file sets differ: {sorted(fa ^ fb)}")
        return False
    diff = [rel for rel in sorted(fa) if (a / rel).read_bytes() != (b / rel).read_bytes()]
    if diff:
        print(f"  contents differ: {diff}")
    return not diff


if __name__ == "__main__":
    sys.exit(main())
