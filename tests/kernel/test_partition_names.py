"""The partition names (``corec_plugin_kit/partitions.py``): pure functions, checked against
Redis Cluster's own hash-slot rule (redis-py's ``key_slot``, which follows the cluster spec)."""

from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from corec_plugin_kit.config import KernelConfig
from corec_plugin_kit.partitions import (
    hash_tag,
    partition_of,
    stream_sets,
    streams_for,
    with_tag,
)


def cfg(**kw: object) -> KernelConfig:
    return KernelConfig.model_validate(kw)


def slot(name: str) -> int:
    return int(key_slot(name.encode()))


def test_one_partition_keeps_the_configured_names() -> None:
    (only,) = stream_sets(cfg(stream_in="a", stream_out="b", dead_letter_stream="c"))
    assert (only.index, only.stream_in, only.stream_out, only.dead_letter_stream) == (
        0, "a", "b", "c",
    )  # fmt: skip
    assert partition_of("anything", 1) == 0


def test_three_partitions_of_the_default_names() -> None:
    sets = stream_sets(cfg(partitions=3))
    assert [s.index for s in sets] == [0, 1, 2]
    for s in sets:
        tag = hash_tag(s.stream_in)
        assert tag is not None and tag.startswith(f"p{s.index}")
        assert s.stream_in == f"corec_commands{{{tag}}}"
        assert s.stream_out == f"corec_responses{{{tag}}}"
        assert s.dead_letter_stream == f"corec_dead_letters{{{tag}}}"
    # One slot per partition, each in its third of the slot space: three masters of a cluster
    # made by `redis-cli --cluster create` (even contiguous ranges) hold one partition each.
    thirds = [slot(s.stream_in) * 3 // REDIS_CLUSTER_HASH_SLOTS for s in sets]
    assert thirds == [0, 1, 2]


def test_a_configured_hash_tag_is_kept_inside_the_partition_tag() -> None:
    sets = stream_sets(
        cfg(stream_in="{app}:in", stream_out="{app}:out", dead_letter_stream="{app}:dead",
            partitions=2)
    )  # fmt: skip
    for s in sets:
        tag = hash_tag(s.stream_in)
        assert tag is not None and tag.startswith(f"app.p{s.index}")
        assert s.stream_out == f"{{{tag}}}:out" and s.dead_letter_stream == f"{{{tag}}}:dead"


def test_hash_tag_follows_the_cluster_rule() -> None:
    assert hash_tag("plain") is None
    assert hash_tag("{}x") is None  # empty: the whole key is hashed
    assert hash_tag("a{b}c{d}") == "b"  # the first one only
    assert hash_tag("a{b{c}") == "b{c"
    assert hash_tag("a}{b}") == "b"
    assert with_tag("a{b}c{d}", "t") == "a{t}c{d}"
    assert with_tag("plain", "t") == "plain{t}"
    assert with_tag("stray{", "t") == "{t}stray{"  # appended, Redis would read "{t" as the tag


def test_partition_of_is_crc32_of_the_id() -> None:
    # What a producer in any language computes: CRC-32 (zlib's, as Java's CRC32, Go's
    # hash/crc32 IEEE) of the UTF-8 id, modulo the partition count.
    assert partition_of("order-42", 3) == zlib.crc32(b"order-42") % 3
    assert partition_of("é", 7) == zlib.crc32("é".encode()) % 7
    counts = [0, 0, 0, 0]
    for i in range(4000):
        counts[partition_of(f"cmd-{i}", 4)] += 1
    assert all(800 < c < 1200 for c in counts), counts  # spread, not piled on one


def test_streams_for_a_command_id() -> None:
    config = cfg(partitions=5)
    sets = stream_sets(config)
    for i in range(50):
        key = f"id-{i}"
        assert streams_for(config, key) == sets[zlib.crc32(key.encode()) % 5]


names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40
)


@settings(max_examples=300, deadline=None)
@given(stream_in=names, stream_out=names, dead=names, count=st.integers(1, 64))
def test_any_names_any_count(stream_in: str, stream_out: str, dead: str, count: int) -> None:
    """Whatever the configured names: each partition's three streams share one slot (so a
    batch commit is one transaction), every partition has its own slot in its own slice of the
    slot space, and P=1 leaves the names alone."""
    config = cfg(stream_in=stream_in, stream_out=stream_out, dead_letter_stream=dead,
                 partitions=count)  # fmt: skip
    sets = stream_sets(config)
    assert len(sets) == count
    if count == 1:
        assert (sets[0].stream_in, sets[0].stream_out) == (stream_in, stream_out)
        return
    seen = set()
    for s in sets:
        slots = {slot(s.stream_in), slot(s.stream_out), slot(s.dead_letter_stream)}
        assert len(slots) == 1
        (own,) = slots
        assert s.index * REDIS_CLUSTER_HASH_SLOTS // count <= own
        assert own < (s.index + 1) * REDIS_CLUSTER_HASH_SLOTS // count
        seen.add(own)
    assert len(seen) == count
    assert len({s.stream_in for s in sets}) == count
