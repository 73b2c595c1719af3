"""The two review back-ends on one corpus, in one run (issue 6).

Corpus: a copy of a few standard-library packages (about 67 files by default) in a temporary
folder. Prints the time of each back-end over the whole corpus (the way `corec-kit reviser
review` runs it), their ratio, and the per-command p50 of `review_code` on a typical file
through the kernel's in-process dispatch.

    python benchmarks/bench_reviser.py [--packages json,email,asyncio] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

from corec_reviser.backends import make_backend
from corec_reviser.config import ReviserConfig
from corec_reviser.files import collect


def corpus(packages: list[str], dest: Path) -> list[tuple[Path, str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in packages:
        shutil.copytree(stdlib / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return collect([dest], dest, ReviserConfig(exclude_patterns=[]))


def time_backend(name: str, files: list[tuple[Path, str]], repeat: int, jobs: int = 0) -> float:
    """Best of ``repeat`` runs over the corpus; ``jobs=1`` keeps black+pyflakes in one process."""
    backend = make_backend(ReviserConfig(jobs=jobs), name)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        backend.review_files([p for p, _ in files], [n for _, n in files])
        best = min(best, time.perf_counter() - start)
    return best


async def per_command_p50(source: str, runs: int) -> dict[str, float]:
    import corec_reviser.processor as reviser

    from corec_plugin_kit.kernel import Kernel
    from corec_plugin_kit.plugins import ProcessorManager

    out = {}
    for backend in ("ruff", "black+pyflakes"):
        pm = ProcessorManager(entry_points=False)
        pm.register(reviser, "reviser")
        kernel = Kernel.build(processors=pm, overrides={"kernel": {"records": False}})
        times = []
        async with kernel:
            command = {"action": "review_code", "params": {"source": source, "backend": backend}}
            await kernel.execute(command)  # warm-up (imports)
            for _ in range(runs):
                start = time.perf_counter()
                result = await kernel.execute(command)
                times.append(time.perf_counter() - start)
                assert result["status"] == "ok", result
        out[backend] = statistics.median(times) * 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", default="json,email,asyncio")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50, help="commands for the p50")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = corpus(args.packages.split(","), Path(tmp))
        lines = sum(p.read_text(errors="replace").count("\n") for p, _ in files)
        ruff = time_backend("ruff", files, args.repeat)
        classic = time_backend("black+pyflakes", files, args.repeat)
        # One process, as the issue's reference figure was taken: the speed-up of ruff itself,
        # without the process pool that the CLI gives black+pyflakes on a many-core machine.
        serial = time_backend("black+pyflakes", files, 1, jobs=1)
        typical = max(files, key=lambda f: -abs(f[0].stat().st_size - 8000))[0].read_text()
    p50 = asyncio.run(per_command_p50(typical, args.runs))
    print(f"\ncorpus: {len(files)} files, {lines} lines ({args.packages})")
    print(f"{'back-end':<16} {'corpus s':>9} {'x ruff':>8} {'p50 ms/command':>15}")
    print(f"{'ruff':<16} {ruff:>9.2f} {1:>8.1f} {p50['ruff']:>15.1f}")
    slow = p50["black+pyflakes"]
    print(f"{'black+pyflakes':<16} {classic:>9.2f} {classic / ruff:>8.1f} {slow:>15.1f}")
    print(f"{'black+pyflakes/1':<16} {serial:>9.2f} {serial / ruff:>8.1f} {'(1 process)':>15}")
    print(f"ruff back-end is {classic / ruff:.0f}x the black+pyflakes back-end on this corpus")
    print(f"({serial / ruff:.0f}x against black+pyflakes in one process)")


if __name__ == "__main__":
    main()
