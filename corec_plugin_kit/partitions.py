"""Partitioned input: ``kernel.partitions = P`` spreads commands over P sets of streams.

A Redis Cluster keeps one stream on one node, and a transaction (a worker's batch commit: its
results, dead letters and XACK) holds keys of one hash slot only. So one input stream is one
node's work, however many nodes there are. With ``partitions = P`` there are P sets of the
three streams (input, results, dead letters); the three streams of a set share one hash tag,
so each set's commit stays one transaction, and the P tags are chosen so that their slots
spread evenly over the slot space (a cluster whose masters split the slots evenly, as
``redis-cli --cluster create`` does, holds P sets on P different masters when P is the number
of masters).

The names (pure functions of the configured names and P, so every producer and worker agrees):

* partition ``p``'s hash tag is ``p<p>`` (``<t>.p<p>`` when ``stream_in`` already has a tag
  ``{t}``), or the first of ``p<p>.1``, ``p<p>.2``... whose slot lies in the ``p``-th of P
  equal slices of the 16384 slots;
* a stream name with a hash tag has that tag replaced by the partition's; a name without one
  gets ``{tag}`` appended (``corec_commands`` -> ``corec_commands{p0.1}``), or put first when
  the name holds a stray ``{``.

A command goes to partition ``crc32(id) % P`` (the CRC-32 of its id's UTF-8 bytes, as
``zlib.crc32``), so one id always lands on one partition and its result on that partition's
result stream. ``corec-kit streams`` prints every name.

With ``partitions = 1`` (the default) nothing changes: the configured names are used as they
are.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

if TYPE_CHECKING:
    from .config import KernelConfig


@dataclass(frozen=True, slots=True)
class StreamSet:
    """The streams of one partition: where its commands arrive, its results and dead letters
    go."""

    index: int
    stream_in: str
    stream_out: str
    dead_letter_stream: str


def hash_tag(name: str) -> str | None:
    """The hash tag of a key as Redis Cluster reads it: between the first ``{`` and the
    first ``}`` after it, when that is not empty."""
    start = name.find("{")
    if start == -1:
        return None
    end = name.find("}", start + 1)
    if end <= start + 1:
        return None
    return name[start + 1 : end]


@lru_cache(maxsize=1024)
def partition_tag(base: str | None, index: int, count: int) -> str:
    """The hash tag of partition ``index`` of ``count``: its slot lies in the ``index``-th of
    ``count`` equal slices of the slot space."""
    stem = f"{base}.p{index}" if base else f"p{index}"
    low = index * REDIS_CLUSTER_HASH_SLOTS // count
    high = (index + 1) * REDIS_CLUSTER_HASH_SLOTS // count
    candidate, attempt = stem, 0
    while not low <= key_slot(candidate.encode()) < high:
        attempt += 1
        candidate = f"{stem}.{attempt}"
    return candidate


def with_tag(name: str, tag: str) -> str:
    """``name`` with its hash tag replaced by ``tag``; without one, ``{tag}`` appended (put
    first when the name holds a ``{``, which would otherwise open the tag Redis reads)."""
    old = hash_tag(name)
    if old is not None:
        return name.replace(f"{{{old}}}", f"{{{tag}}}", 1)
    return f"{{{tag}}}{name}" if "{" in name else f"{name}{{{tag}}}"


def stream_sets(cfg: KernelConfig) -> tuple[StreamSet, ...]:
    """Every partition's streams (one set, the configured names, when ``partitions`` is 1)."""
    return _sets(cfg.stream_in, cfg.stream_out, cfg.dead_letter_stream, cfg.partitions)


@lru_cache(maxsize=64)
def _sets(stream_in: str, stream_out: str, dead: str, count: int) -> tuple[StreamSet, ...]:
    if count == 1:
        return (StreamSet(0, stream_in, stream_out, dead),)
    base = hash_tag(stream_in)
    out = []
    for index in range(count):
        tag = partition_tag(base, index, count)
        out.append(
            StreamSet(index, with_tag(stream_in, tag), with_tag(stream_out, tag),
                      with_tag(dead, tag))
        )  # fmt: skip
    return tuple(out)


def partition_of(command_id: str, count: int) -> int:
    """The partition a command with this id goes to: ``crc32(id) % count``."""
    if count == 1:
        return 0
    return zlib.crc32(command_id.encode("utf-8", "surrogatepass")) % count


def streams_for(cfg: KernelConfig, command_id: str) -> StreamSet:
    """The streams of the partition a command with this id goes to."""
    sets = stream_sets(cfg)
    return sets[partition_of(command_id, len(sets))]
