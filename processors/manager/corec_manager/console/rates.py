"""Commands per second, latency percentiles and errors per action, from the workers' figures.

Each worker publishes running totals every few seconds (``api.worker_figures``): per action,
the count of each outcome and a histogram of handler durations. The console keeps the samples
it has seen (:class:`Sampler`) and turns the difference between two of them into rates and
percentiles, as Prometheus's ``rate`` and ``histogram_quantile`` do, each worker from its own
oldest figure in the window. A worker that restarted (another ``started``) or whose totals
went down counts from zero again; a worker seen for the first time that started before the
window has no baseline yet, and counts from its next figure on.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Outcomes that are not errors.
FINE = frozenset({"ok", "replayed"})


@dataclass
class ActionRates:
    """One action's figures over a window."""

    processor: str | None = None
    count: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    buckets: list[float] = field(default_factory=list)
    #: Commands/s: the sum of each worker's change over its own span.
    per_second: float = 0.0
    total: int = 0

    def as_dict(self, bounds: Sequence[float]) -> dict[str, Any]:
        return {
            "processor": self.processor,
            "count": self.count,
            "rate": round(self.per_second, 2),
            "p50_ms": _ms(quantile(0.5, bounds, self.buckets)),
            "p99_ms": _ms(quantile(0.99, bounds, self.buckets)),
            "errors": dict(sorted(self.errors.items())),
            "total": self.total,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The ``q`` quantile of a histogram (non-cumulative ``counts``, one per bound plus +Inf),
    interpolated linearly inside its bucket; ``None`` with no observations. Past the last
    finite bound, the last bound (a floor: the histogram cannot say more)."""
    total = sum(counts)
    if total <= 0 or not bounds:
        return None
    rank = q * total
    seen = 0.0
    lower = 0.0
    for bound, count in zip([*bounds, float("inf")], counts, strict=False):
        if count > 0 and seen + count >= rank:
            if bound == float("inf"):
                return float(bounds[-1])
            return lower + (bound - lower) * max(0.0, rank - seen) / count
        seen += count
        lower = bound
    return float(bounds[-1])


@dataclass
class _Sample:
    at: float  # when the console read it
    workers: dict[str, dict[str, Any]]  # consumer -> its published figures


class Sampler:
    """The figures the console has read, for ``keep_s`` seconds."""

    def __init__(self, keep_s: float = 900.0) -> None:
        self.keep_s = keep_s
        self.samples: deque[_Sample] = deque()
        self.bounds: list[float] = []

    def add(self, figures: Mapping[str, Any], now: float | None = None) -> None:
        """Keep one reading of ``api.worker_figures``."""
        now = time.time() if now is None else now
        bounds = _numbers(figures.get("buckets"))
        if bounds:
            self.bounds = bounds
        workers: dict[str, dict[str, Any]] = {}
        for raw in figures.get("workers") or ():
            fig = _clean(raw)
            if fig is not None:
                workers[fig["consumer"]] = fig
        self.samples.append(_Sample(now, workers))
        while self.samples and now - self.samples[0].at > self.keep_s:
            self.samples.popleft()

    def _baseline(
        self, consumer: str, fig: Mapping[str, Any], window: list[_Sample]
    ) -> tuple[Mapping[str, Any] | None, float] | None:
        """The oldest figure of this worker (this run of it) in the window and when it was
        read; ``(None, start)`` for a worker that started inside the window (it counts from
        zero); ``None`` when there is no baseline (first seen now, started before the window)."""
        for sample in window[:-1]:
            then = sample.workers.get(consumer)
            if then is not None and then.get("started") == fig.get("started"):
                return then, sample.at
        started = float(fig.get("started") or 0)
        if len(window) > 1 and started >= window[0].at:
            return None, started
        return None

    def actions(self, window_s: float) -> dict[str, dict[str, Any]]:
        """Per action, over (about) the last ``window_s`` seconds: ``rate`` (commands/s),
        ``p50_ms``, ``p99_ms``, ``errors`` by type, ``count``, and ``total`` since the workers
        started. Each worker's change is taken from its oldest figure in the window."""
        if not self.samples:
            return {}
        newest = self.samples[-1]
        window = [s for s in self.samples if newest.at - s.at <= window_s]
        out: dict[str, ActionRates] = {}
        for consumer, now_fig in newest.workers.items():
            base = self._baseline(consumer, now_fig, window)
            _add_worker(out, now_fig, base, newest.at, len(self.bounds))
        return {name: out[name].as_dict(self.bounds) for name in sorted(out)}

    def series(self, window_s: float, action: str | None = None) -> list[float]:
        """Commands/s between consecutive samples over the window (all actions, or one)."""
        points: list[_Sample] = []
        for sample in self.samples:
            if self.samples[-1].at - sample.at > window_s:
                continue
            # The console reads every second, workers publish every 2 s: a reading with no
            # new figure is no step (it would read as a second with nothing done).
            stamp = {c: f.get("at") for c, f in sample.workers.items()}
            if points and stamp == {c: f.get("at") for c, f in points[-1].workers.items()}:
                continue
            points.append(sample)
        rates: list[float] = []
        for before, after in itertools.pairwise(points):
            span = after.at - before.at
            if span <= 0:
                continue
            count = sum(
                _delta_count(fig, before.workers.get(consumer), action)
                for consumer, fig in after.workers.items()
            )
            rates.append(count / span)
        return rates


def _numbers(value: Any) -> list[float]:
    """``value`` as a list of finite numbers, or ``[]`` when it is anything else."""
    if not isinstance(value, list):
        return []
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or item != item:
            return []
        out.append(float(item))
    return out


def _clean(raw: Any) -> dict[str, Any] | None:
    """A worker's published figures with only what reads right: they come from a Redis hash
    anyone with write access can fill, so a malformed one is left out, never raised on."""
    if not isinstance(raw, dict) or not isinstance(raw.get("consumer"), str):
        return None
    try:
        at, started = float(raw.get("at") or 0), float(raw.get("started") or 0)
    except (TypeError, ValueError):
        return None
    actions: dict[str, Any] = {}
    for name, entry in (
        (raw.get("actions") or {}).items() if isinstance(raw.get("actions"), dict) else ()
    ):
        if not isinstance(entry, dict) or not isinstance(entry.get("outcomes"), dict):
            continue
        outcomes = {
            str(k): int(v) for k, v in entry["outcomes"].items()
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0
        }  # fmt: skip
        processor = entry.get("processor")
        actions[str(name)] = {
            "processor": processor if isinstance(processor, str) else None,
            "outcomes": outcomes,
            "buckets": _numbers(entry.get("buckets")),
        }
    return {**raw, "at": at, "started": started, "actions": actions}


def _outcomes(fig: Mapping[str, Any] | None, action: str) -> Mapping[str, Any]:
    if not fig:
        return {}
    entry = (fig.get("actions") or {}).get(action) or {}
    outcomes: Mapping[str, Any] = entry.get("outcomes") or {}
    return outcomes


def _restarted(now_fig: Mapping[str, Any], then_fig: Mapping[str, Any] | None) -> bool:
    return then_fig is None or then_fig.get("started") != now_fig.get("started")


def _delta_count(
    now_fig: Mapping[str, Any], then_fig: Mapping[str, Any] | None, action: str | None
) -> int:
    if then_fig is None:
        return 0  # no baseline (a worker that started in between: counted from the next)
    names: Iterable[str] = [action] if action else (now_fig.get("actions") or {}).keys()
    total = 0
    for name in names:
        now_n = sum(int(v) for v in _outcomes(now_fig, name).values())
        then_n = (
            0
            if _restarted(now_fig, then_fig)
            else sum(int(v) for v in _outcomes(then_fig, name).values())
        )
        total += now_n - then_n if now_n >= then_n else now_n
    return total


def _add_worker(
    out: dict[str, ActionRates],
    now_fig: Mapping[str, Any],
    base: tuple[Mapping[str, Any] | None, float] | None,
    now_at: float,
    nbuckets: int,
) -> None:
    """Add one worker's totals, and its change since ``base`` (figure, read at), to ``out``."""
    then_fig, then_at = base if base is not None else (None, now_at)
    span = now_at - then_at
    for action, entry in (now_fig.get("actions") or {}).items():
        rates = out.setdefault(action, ActionRates(buckets=[0.0] * (nbuckets + 1)))
        rates.processor = entry.get("processor") or rates.processor
        now_out = {k: int(v) for k, v in (entry.get("outcomes") or {}).items()}
        rates.total += sum(now_out.values())
        if base is None or span <= 0:
            continue
        then_entry = ((then_fig or {}).get("actions") or {}).get(action) or {}
        then_out = {k: int(v) for k, v in (then_entry.get("outcomes") or {}).items()}
        if any(now_out.get(k, 0) < n for k, n in then_out.items()):
            then_out, then_entry = {}, {}  # totals went down: counted from zero again
        change = 0
        for outcome, n in now_out.items():
            step = n - then_out.get(outcome, 0)
            change += step
            if outcome not in FINE and step:
                rates.errors[outcome] = rates.errors.get(outcome, 0) + step
        rates.count += change
        rates.per_second += change / span
        now_b = entry.get("buckets") or []
        then_b = then_entry.get("buckets") or [0] * len(now_b)
        for i, (a, b) in enumerate(zip(now_b, then_b, strict=False)):
            if i < len(rates.buckets):
                rates.buckets[i] += max(0.0, float(a) - float(b))
