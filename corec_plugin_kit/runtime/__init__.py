"""The Redis Streams runtime: the worker behind ``corec-kit run``, and the stream operations.

Modules: ``worker`` (the stream worker: assembly and lifecycle) and its parts ``state``,
``reading``, ``handling``, ``commit``, ``maintenance``, with ``policy`` (the per-entry
decisions, pure), ``transport`` (the packed MULTI) and ``compat`` (version shims);
``service`` (wiring for ``corec-kit run``: Redis, the record store, metrics and the worker),
``breaker`` (per-processor circuit breaker), ``embedded`` (the embedded Valkey server),
``connection`` (Redis clients), ``consumers`` (list the group's consumers, prune dead ones),
``metrics`` (Prometheus), ``ops`` (send, stats, dead-letter and consumer operations),
``testing`` (pytest fixtures). docs/architecture.md maps them all. Importing this package
imports nothing heavy.
"""
