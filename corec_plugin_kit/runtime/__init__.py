"""The Redis Streams runtime: the worker behind ``corec-kit run``, and the stream operations.

Modules: ``worker`` (the stream worker: assembly and lifecycle) and its parts ``state``,
``reading``, ``handling``, ``commit``, ``maintenance``, with ``policy`` (the per-entry
decisions, pure), ``transport`` (the packed MULTI) and ``compat`` (version shims);
``partitioned`` (``WorkerSet``: one worker per partition in one process);
``service`` (wiring for ``corec-kit run``: Redis, the record store, metrics and the worker),
``supervisor`` (``run --workers N``: worker processes watched by one supervisor),
``breaker`` (per-processor circuit breaker), ``published`` (the breakers' states, published in
Redis), ``figures`` (each worker's figures, published in Redis), ``ratelimit`` (the actions'
rate limits, shared by a deployment's workers), ``embedded`` (the embedded Valkey server),
``connection`` (Redis clients), ``consumers`` (list the group's consumers, prune dead ones),
``metrics`` (Prometheus), ``ops`` (send, stats, dead-letter and consumer operations),
``testing`` (pytest fixtures). docs/architecture.md maps them all. Importing this package
imports nothing heavy.
"""
